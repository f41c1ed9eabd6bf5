"""Agents that could take a node down, and command agents, with a real hub and real nodes.

The hub runs with short timings (heartbeats every 0.5 s, a node silent for 2 s is not ready).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers import get_task, node_status, submit, wait_task
from support.live import wait_for
from support.plugin_agents import install_plugins

pytestmark = pytest.mark.slow

BUSY_SECONDS = 8  # four times the hub's heartbeat grace; the 30 s would only be slower


def test_a_node_running_a_busy_plain_def_agent_stays_ready(
    hub_factory: Any, node_factory: Any, tmp_path: Path
) -> None:
    hub = hub_factory()
    token = hub.create_user("alice", "admin")
    plugins = install_plugins(tmp_path / "plugins")
    node = node_factory(hub, "spinner", env={"PYTHONPATH": plugins})
    node.wait_ready(token)
    task = submit(hub, token, agent_id="busy", input=str(BUSY_SECONDS), strategy="golem")
    sid = task["session_id"]
    assert wait_task(hub, token, sid, "running")["node"] == "spinner"
    seen = set()
    while get_task(hub, token, sid)["status"] == "running":
        seen.add(node_status(hub, token, "spinner"))
        time.sleep(0.2)
    done = wait_task(hub, token, sid, "succeeded")
    assert done["output"].startswith("spun ")
    assert seen == {"ready"}, f"the node was {seen} while its agent spun"


def test_a_cancel_kills_a_busy_isolated_agent_within_seconds(
    hub_factory: Any, node_factory: Any, tmp_path: Path
) -> None:
    hub = hub_factory()
    token = hub.create_user("alice", "admin")
    node = node_factory(hub, "spinner", env={"PYTHONPATH": install_plugins(tmp_path / "p")})
    node.wait_ready(token)
    task = submit(hub, token, agent_id="busy-isolated", input="600", strategy="golem")
    sid = task["session_id"]
    wait_task(hub, token, sid, "running")
    line = wait_for(
        lambda: get_task(hub, token, sid)["log"], timeout=15, what="the agent's pid in the log"
    )
    child = psutil.Process(int(line[0].split()[1]))
    assert child.pid != node.proc.pid and child.parent().pid == node.proc.pid
    status, body = hub.api("POST", f"/api/v1/tasks/{sid}/cancel/", token=token)
    assert status == 200, body
    cancelled_at = time.monotonic()
    wait_for(
        lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE,
        timeout=10,
        what="the agent's process to be killed",
    )
    print(f"agent process gone {time.monotonic() - cancelled_at:.1f}s after the cancel")
    assert get_task(hub, token, sid)["status"] == "cancelled"
    assert node_status(hub, token, "spinner") == "ready"
    # Its slot is free again: the node takes the next task.
    again = submit(hub, token, agent_id="echo", input="next", strategy="golem")
    assert wait_task(hub, token, again["session_id"], "succeeded")["node"] == "spinner"


def test_the_hub_runs_its_command_agents_locally(hub_factory: Any) -> None:
    script = "import sys; data = sys.stdin.read(); print(data.upper(), end='')"
    hub = hub_factory(
        extra_env={"HIVEMIND_COMMAND_AGENTS": f'shout={sys.executable} -c "{script}";wc=wc -c'}
    )
    token = hub.create_user("alice", "operator")
    task = submit(hub, token, agent_id="shout", input="quiet\nplease", strategy="local")
    done = wait_task(hub, token, task["session_id"], "succeeded")
    assert (done["output"], done["log"]) == ("QUIET\nPLEASE", ["QUIET", "PLEASE"])
    task = submit(hub, token, agent_id="wc", input="12345", strategy="local")
    assert wait_task(hub, token, task["session_id"], "succeeded")["output"].strip() == "5"


def test_a_hub_with_a_bad_command_agent_spec_does_not_start(tmp_path: Path) -> None:
    from support.live import LiveHub

    hub = LiveHub(tmp_path / "hub", extra_env={"HIVEMIND_COMMAND_AGENTS": "x=echo 'open"})
    with pytest.raises(AssertionError) as failure:
        hub.start()
    assert (
        "HIVEMIND_COMMAND_AGENTS: command agent 'x': cannot split the command line: "
        "No closing quotation"
    ) in str(failure.value)
