"""Hub restarts and stalled nodes, with real processes: nothing lost, nothing run twice."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest
from helpers import create_team, events, get_task, node_status, submit, wait_task
from support.live import wait_for

pytestmark = pytest.mark.slow


def test_a_hub_outage_longer_than_the_lost_window_fails_nothing_on_live_nodes(
    hub_factory: Any, node_factory: Any
) -> None:
    hub = hub_factory()
    token = hub.create_user("alice", "admin")
    node_factory(hub, "steady", capacity=2).wait_ready(token)
    task = submit(hub, token, agent_id="sleep", input="9", strategy="golem")
    wait_task(hub, token, task["session_id"], "running")
    hub.kill()
    time.sleep(6)  # longer than HIVEMIND_LOST_AFTER (4 s) in these tests
    hub.start(migrate=False)
    done = wait_task(hub, token, task["session_id"], "succeeded", timeout=30)
    assert (done["node"], done["attempts"]) == ("steady", 1)
    assert "attempt_failed" not in [k for k, _, _ in events(hub, token, task["session_id"])]


def test_runs_waiting_in_the_local_queue_survive_a_hub_crash(hub_factory: Any) -> None:
    hub = hub_factory(extra_env={"HIVEMIND_LOCAL_CONCURRENCY": "1"})
    token = hub.create_user("alice", "admin")
    create_team(hub, token, "patient", "retry")
    running = submit(hub, token, agent_id="sleep", input="3", strategy="local", team="patient")
    wait_task(hub, token, running["session_id"], "running")
    queued = submit(hub, token, agent_id="echo", input="still here", strategy="local")
    wait_for(
        lambda: get_task(hub, token, queued["session_id"])["route"] == "local",
        timeout=5,
        what="the second run routed and queued",
    )
    hub.kill()
    hub.start(migrate=False)
    # The interrupted run failed "hub restarted" and its team retried it: a second attempt
    # that runs to the end (neither left pending nor cancelled by nobody)...
    retried = wait_task(hub, token, running["session_id"], "succeeded", timeout=30)
    assert retried["attempts"] == 2
    kinds = events(hub, token, running["session_id"])
    assert any(k == "attempt_failed" and d.get("error") == "hub restarted" for k, _, d in kinds)
    # ...and the run that waited in the queue was routed again and ran.
    assert wait_task(hub, token, queued["session_id"], "succeeded")["output"] == "still here"


def test_a_stalled_node_loses_its_task_and_is_told_to_drop_it(
    hub_factory: Any, node_factory: Any
) -> None:
    hub = hub_factory()
    token = hub.create_user("alice", "admin")
    create_team(hub, token, "movers", "retry")
    frozen = node_factory(hub, "frozen", capacity=1)
    frozen.wait_ready(token)
    task = submit(hub, token, agent_id="sleep", input="6", strategy="golem", team="movers")
    wait_task(hub, token, task["session_id"], "running")
    spare = node_factory(hub, "spare", capacity=1)
    spare.wait_ready(token)
    frozen.proc.send_signal(signal.SIGSTOP)  # alive, socket open, silent
    try:
        wait_for(
            lambda: node_status(hub, token, "frozen") == "not_ready",
            timeout=6,
            what="the stalled node not_ready",
        )
        wait_for(
            lambda: get_task(hub, token, task["session_id"])["node"] == "spare",
            timeout=20,
            what="the retry on the spare node",
        )
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
    # Back from its stall, the frozen node is told to drop the attempt it still runs...
    wait_for(
        lambda: frozen.stats().get("finished", 0) >= 1, timeout=15, what="the stalled run stopped"
    )
    done = wait_task(hub, token, task["session_id"], "succeeded", timeout=30)
    # ...and its late reports change nothing on the new attempt.
    assert (done["node"], done["attempts"]) == ("spare", 2)
    assert spare.stats()["started"] == 1


def test_a_node_restarted_with_sigterm_comes_back_ready(
    hub_factory: Any, node_factory: Any
) -> None:
    hub = hub_factory()
    token = hub.create_user("alice", "admin")
    node = node_factory(hub, "rolling", capacity=1)
    node.wait_ready(token)
    assert node.terminate() == 0
    node_factory(hub, "rolling", capacity=1).wait_ready(token)
    task = submit(hub, token, agent_id="echo", input="x", strategy="golem")
    assert wait_task(hub, token, task["session_id"], "succeeded")["node"] == "rolling"


def test_another_hub_releases_a_dead_hubs_local_runs_when_its_lease_runs_out(
    hub_factory: Any,
) -> None:
    # Two hub processes on one database, each with its own default (unique) instance name.
    first = hub_factory("shared", instance="")
    second = hub_factory("shared", instance="")
    token = first.create_user("alice", "admin")
    create_team(first, token, "solo", "fail")
    task = submit(first, token, agent_id="sleep", input="120", strategy="local", team="solo")
    wait_task(first, token, task["session_id"], "running")
    first.kill()
    done = wait_task(second, token, task["session_id"], "failed", timeout=45)
    assert done["error"].startswith("hub lost")
