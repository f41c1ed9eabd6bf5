"""A graceful stop (DESIGN §13): SIGTERM to a hub stops it taking work, lets its local runs
finish within HIVEMIND_SHUTDOWN_GRACE, and fails those still running past it "hub stopped",
after which their team's policy decides."""

from __future__ import annotations

import signal
from typing import Any

import pytest
from helpers import create_team, events, get_task, submit, wait_task
from support.live import wait_for

pytestmark = pytest.mark.slow


def sigterm(hub: Any) -> None:
    assert hub.proc is not None
    hub.proc.send_signal(signal.SIGTERM)


def test_local_runs_finish_within_the_grace_and_nothing_fails(hub_factory: Any) -> None:
    hub = hub_factory(
        extra_env={"HIVEMIND_SHUTDOWN_GRACE": "30", "HIVEMIND_LOCAL_CONCURRENCY": "2"}
    )
    token = hub.create_user("alice", "admin")
    runs = [submit(hub, token, agent_id="sleep", input="3", strategy="local") for _ in range(3)]
    for run in runs[:2]:
        wait_task(hub, token, run["session_id"], "running")
    sigterm(hub)
    wait_for(lambda: "stopping: no new work" in hub.log(), timeout=10, what="the drain")
    # Still answering while it drains, but no longer starting anything.
    late = submit(hub, token, agent_id="echo", input="later", strategy="local")
    assert hub.proc is not None and hub.proc.wait(timeout=30) == 0
    hub.start(migrate=False)
    for run in runs:
        done = get_task(hub, token, run["session_id"])
        assert (done["status"], done["attempts"]) == ("succeeded", 1), events(
            hub, token, run["session_id"]
        )
    assert wait_task(hub, token, late["session_id"], "succeeded")["output"] == "later"


def test_runs_outliving_the_grace_fail_hub_stopped_and_the_team_decides(
    hub_factory: Any,
) -> None:
    hub = hub_factory(extra_env={"HIVEMIND_SHUTDOWN_GRACE": "1"})
    token = hub.create_user("alice", "admin")
    create_team(hub, token, "strict", "fail")
    create_team(hub, token, "patient", "retry")
    strict = submit(hub, token, agent_id="sleep", input="60", strategy="local", team="strict")
    patient = submit(hub, token, agent_id="sleep", input="60", strategy="local", team="patient")
    for task in (strict, patient):
        wait_task(hub, token, task["session_id"], "running")
    sigterm(hub)
    assert hub.proc is not None and hub.proc.wait(timeout=30) == 0
    assert "failing 2 local run(s) still in progress: hub stopped" in hub.log()
    hub.start(migrate=False)
    failed = get_task(hub, token, strict["session_id"])
    assert (failed["status"], failed["error"]) == ("failed", "hub stopped")
    # The retry policy gave the other one a second attempt, run by the restarted hub.
    retried = wait_task(hub, token, patient["session_id"], "running", timeout=30)
    assert retried["attempts"] == 2
    kinds = events(hub, token, patient["session_id"])
    assert any(k == "attempt_failed" and d.get("error") == "hub stopped" for k, _, d in kinds)
