"""Node control on real processes: what an operator decides reaches the node process, which
acknowledges it, and the next task goes where the operator says (DESIGN §14)."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import submit, wait_task
from support.live import LiveHub, NodeProcess, wait_for

pytestmark = pytest.mark.slow


def node(hub: LiveHub, token: str, name: str) -> dict[str, Any]:
    status, body = hub.api("GET", f"/api/v1/nodes/{name}/", token=token)
    assert status == 200, body
    return body


def acknowledged(hub: LiveHub, token: str, name: str) -> dict[str, Any] | None:
    """The node, once its node.state answers the hub's latest node.config."""
    body = node(hub, token, name)
    return body if body["reported"].get("generation") == body["config_generation"] else None


def test_drain_then_uncordon_and_the_next_task_runs_on_that_node(
    live_hub: LiveHub, admin_token: str, node_factory: Any
) -> None:
    hub, token = live_hub, admin_token
    worker: NodeProcess = node_factory(hub, "worker", capacity=2)
    worker.wait_ready(token)
    status, _ = hub.api("POST", "/api/v1/nodes/worker/drain/", token=token)
    assert status == 200
    drained = wait_for(
        lambda: (n := acknowledged(hub, token, "worker")) and n["status"] == "cordoned" and n,
        timeout=15,
        what="the drained node to acknowledge it is cordoned",
    )
    assert drained["reported"]["cordoned"] is True
    status, _ = hub.api("POST", "/api/v1/nodes/worker/uncordon/", token=token)
    assert status == 200
    back = wait_for(
        lambda: (n := acknowledged(hub, token, "worker")) and n["status"] == "ready" and n,
        timeout=15,
        what="the uncordoned node to acknowledge it",
    )
    assert (back["reported"]["cordoned"], back["reported"]["draining"]) == (False, False)
    # Before, the hub showed it ready while the process still refused "node is draining",
    # and the task fell back to local.
    task = submit(hub, token, agent_id="echo", input="after uncordon", strategy="golem")
    done = wait_task(hub, token, task["session_id"], {"succeeded", "failed"})
    assert (done["status"], done["route"], done["node"]) == ("succeeded", "golem", "worker"), done[
        "fallback_reason"
    ]
    assert node(hub, token, "worker")["refusals"] == 0


def test_a_capacity_patch_reaches_the_node_and_four_run_at_once(
    live_hub: LiveHub, admin_token: str, node_factory: Any
) -> None:
    hub, token = live_hub, admin_token
    worker: NodeProcess = node_factory(hub, "wide", capacity=2)
    worker.wait_ready(token)
    status, body = hub.api("PATCH", "/api/v1/nodes/wide/", token=token, body={"capacity": 4})
    assert status == 200, body
    patched = wait_for(
        lambda: acknowledged(hub, token, "wide"), timeout=15, what="the node to apply capacity 4"
    )
    assert (patched["capacity"], patched["reported"]["capacity"]) == (4, 4)
    tasks = [submit(hub, token, agent_id="sleep", input="3", strategy="golem") for _ in range(4)]
    # Before, the node refused the third "at capacity (2/2 running)": two fell back.
    wait_for(
        lambda: all(task_status(hub, token, t) == "running" for t in tasks),
        timeout=20,
        what="four tasks running at once on the node",
    )
    assert node(hub, token, "wide")["running"] == 4
    for task in tasks:
        done = wait_task(hub, token, task["session_id"], {"succeeded", "failed"})
        assert (done["status"], done["node"]) == ("succeeded", "wide"), done["fallback_reason"]


def task_status(hub: LiveHub, token: str, task: dict[str, Any]) -> str:
    _, body = hub.api("GET", f"/api/v1/tasks/{task['session_id']}/", token=token)
    return body["status"]
