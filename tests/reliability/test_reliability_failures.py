"""Failures with real processes: kill -9 of a node, a hub restart, force fallback, drain.

The hub runs with short timings (heartbeat grace 2 s, node lost after 4 s, assign timeout 3 s).
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers import create_team, events, get_task, node_status, submit, wait_task
from support.live import wait_for

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("policy", ["retry", "fail"])
def test_a_killed_node_is_not_ready_and_its_task_follows_the_team_policy(
    hub_factory: Any, node_factory: Any, policy: str
) -> None:
    hub = hub_factory()
    token = hub.create_user("alice", "admin")
    first = node_factory(hub, "first", labels="zone=a", capacity=2)
    first.wait_ready(token)
    create_team(hub, token, f"t-{policy}", policy)
    task = submit(hub, token, agent_id="sleep", input="2", strategy="golem", team=f"t-{policy}")
    assert wait_task(hub, token, task["session_id"], "running")["node"] == "first"
    # Only now does a second node join, so the task can only be retried there.
    second = node_factory(hub, "second", labels="zone=a", capacity=2)
    second.wait_ready(token)
    first.kill()
    wait_for(
        lambda: node_status(hub, token, "first") == "not_ready",
        timeout=6,
        what="first not_ready within the grace",
    )
    if policy == "retry":
        done = wait_task(hub, token, task["session_id"], "succeeded", timeout=30)
        assert (done["node"], done["attempts"]) == ("second", 2)
        kinds = events(hub, token, task["session_id"])
        lost = [e for e in kinds if e[0] == "attempt_failed"]
        assert lost and lost[0][2]["error"] == "node lost" and lost[0][2]["node"] == "first"
        assert any(k == "retry" and "first" in d["excluded_nodes"] for k, _, d in kinds)
    else:
        done = wait_task(hub, token, task["session_id"], "failed", timeout=30)
        assert (done["error"], done["attempts"]) == ("node lost", 1)


def test_a_retry_never_goes_back_to_the_node_that_lost_the_task(
    hub_factory: Any, node_factory: Any
) -> None:
    hub = hub_factory()
    token = hub.create_user("alice", "admin")
    only = node_factory(hub, "only", capacity=2)
    only.wait_ready(token)
    create_team(hub, token, "again", "retry")
    # max_wait 0: with its only node excluded, the retry falls back at once.
    task = submit(
        hub, token, agent_id="sleep", input="3", strategy="golem", team="again", max_wait=0
    )
    wait_task(hub, token, task["session_id"], "running")
    only.kill()
    # The node comes back under the same name after the task was declared lost.
    wait_task(hub, token, task["session_id"], {"pending", "running", "succeeded"}, timeout=20)
    wait_for(
        lambda: get_task(hub, token, task["session_id"])["attempts"] == 2,
        timeout=20,
        what="the second attempt",
    )
    node_factory(hub, "only", capacity=2).wait_ready(token)
    done = wait_task(hub, token, task["session_id"], "succeeded", timeout=30)
    # Its only node is excluded, so the retry fell back to local.
    assert done["route"] == "local" and done["node"] is None


def test_results_finished_while_the_hub_was_down_are_recorded_once(
    hub_factory: Any, node_factory: Any
) -> None:
    hub = hub_factory()
    token = hub.create_user("alice", "admin")
    nodes = [node_factory(hub, f"n{i}", capacity=2) for i in range(2)]
    for node in nodes:
        node.wait_ready(token)
    tasks = [submit(hub, token, agent_id="sleep", input="2", strategy="golem") for _ in range(4)]
    for task in tasks:
        assert wait_task(hub, token, task["session_id"], "running")["route"] == "golem"
    hub.stop()
    # The agents finish while the hub is away and keep their results.
    wait_for(
        lambda: all(n.stats().get("finished", 0) >= 2 for n in nodes),
        timeout=20,
        what="nodes finishing offline",
    )
    hub.start(migrate=False)
    for task in tasks:
        done = wait_task(hub, token, task["session_id"], "succeeded", timeout=30)
        assert done["output"].startswith("slept")
        assert [e[0] for e in events(hub, token, task["session_id"])].count("succeeded") == 1
    assert sum(n.stats()["started"] for n in nodes) == 4  # none ran twice
    for node in nodes:
        wait_for(
            lambda n=node: node_status(hub, token, n.name) == "ready",
            timeout=10,
            what="nodes reconnected by themselves",
        )


def test_a_hub_restart_fails_its_own_interrupted_local_runs(hub_factory: Any) -> None:
    hub = hub_factory()
    token = hub.create_user("alice", "admin")
    create_team(hub, token, "strict", "fail")
    task = submit(hub, token, agent_id="sleep", input="30", strategy="local", team="strict")
    wait_task(hub, token, task["session_id"], "running")
    hub.kill()
    hub.start(migrate=False)
    done = wait_task(hub, token, task["session_id"], "failed", timeout=20)
    assert done["error"] == "hub restarted"


def test_force_fallback_moves_a_remote_task_to_local_with_an_audit_event(
    hub_factory: Any, node_factory: Any
) -> None:
    hub = hub_factory()
    token = hub.create_user("alice", "admin")
    node = node_factory(hub, "remote", capacity=1)
    node.wait_ready(token)
    task = submit(hub, token, agent_id="sleep", input="3", strategy="golem")
    wait_task(hub, token, task["session_id"], "running")
    status, body = hub.api("POST", f"/api/v1/tasks/{task['session_id']}/fallback/", token=token)
    assert status == 200, body
    done = wait_task(hub, token, task["session_id"], "succeeded", timeout=20)
    assert (done["route"], done["node"]) == ("local", None)
    assert done["fallback_reason"] == "forced to local by alice"
    assert ("force_fallback", "alice") in [
        (k, a) for k, a, _ in events(hub, token, task["session_id"])
    ]
    # The node was told to stop, and its slot is free again.
    wait_for(lambda: node.stats().get("finished", 0) >= 1, timeout=10, what="node cancel")
    _, remote = hub.api("GET", "/api/v1/nodes/remote/", token=token)
    assert remote["running"] == 0


def test_a_draining_node_takes_no_work_and_shows_draining_until_its_tasks_end(
    hub_factory: Any, node_factory: Any
) -> None:
    hub = hub_factory()
    token = hub.create_user("alice", "admin")
    node = node_factory(hub, "busy", capacity=2)
    node.wait_ready(token)
    task = submit(hub, token, agent_id="sleep", input="2", strategy="golem")
    wait_task(hub, token, task["session_id"], "running")
    status, body = hub.api("POST", "/api/v1/nodes/busy/drain/", token=token)
    assert (status, body["status"]) == (200, "draining")
    other = submit(hub, token, agent_id="echo", input="x", strategy="golem", max_wait=0)
    assert wait_task(hub, token, other["session_id"], "succeeded")["route"] == "local"
    # Allowed to wait, a task waits for the drained node's successor rather than going local.
    patient = submit(hub, token, agent_id="echo", input="y", strategy="golem", max_wait=60)
    reason = wait_for(
        lambda: get_task(hub, token, patient["session_id"])["waiting_reason"],
        timeout=10,
        what="the task waiting for a node",
    )
    assert reason == "0/1 nodes available: 1 cordoned"
    wait_task(hub, token, task["session_id"], "succeeded", timeout=20)
    wait_for(
        lambda: node_status(hub, token, "busy") == "cordoned",
        timeout=10,
        what="a drained node staying cordoned",
    )
    assert get_task(hub, token, patient["session_id"])["status"] == "pending"  # still waiting


def test_an_assignment_nobody_accepts_falls_back_to_local(hub_factory: Any) -> None:
    """A node that connects but never answers: the assign timeout is a scheduling failure."""
    import asyncio
    import json

    from websockets.asyncio.client import connect

    from executor_core.node import protocol

    hub = hub_factory()
    token = hub.create_user("alice", "admin")
    _, reg = hub.api(
        "POST",
        "/api/v1/nodes/register/",
        body={"join_token": hub.join_token, "name": "mute", "capacity": 1},
    )

    async def scenario() -> dict:
        async with connect(
            hub.url.replace("http", "ws") + "/ws/nodes/",
            origin=hub.url,
            additional_headers={"Authorization": f"Bearer {reg['token']}"},
        ) as ws:
            await ws.send(
                json.dumps(
                    {
                        "type": "hello",
                        "v": protocol.PROTOCOL_VERSION,
                        "name": "mute",
                        "version": "t",
                        "labels": {},
                        "capacity": 1,
                        "agents": [],
                        "running": [],
                    }
                )
            )
            await ws.recv()  # welcome
            await ws.send(
                json.dumps(
                    {
                        "type": "heartbeat",
                        "v": protocol.PROTOCOL_VERSION,
                        "running": 0,
                        "cpu": 1.0,
                        "mem": 1.0,
                        "peak": 0,
                    }
                )
            )
            await asyncio.to_thread(
                wait_for,
                lambda: node_status(hub, token, "mute") == "ready",
                timeout=10,
                what="mute ready",
            )
            task = await asyncio.to_thread(
                submit, hub, token, agent_id="echo", input="x", strategy="golem"
            )
            assign = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if assign["type"] == "node.config":  # the hub's word on the node, after welcome
                assign = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert assign["type"] == "task.assign"
            return await asyncio.to_thread(wait_task, hub, token, task["session_id"], "succeeded")

    done = asyncio.run(scenario())
    assert done["route"] == "local"
    assert "did not accept" in done["fallback_reason"]


def test_fallback_mode_routes_golem_work_locally(hub_factory: Any, node_factory: Any) -> None:
    hub = hub_factory()
    token = hub.create_user("alice", "admin")
    node_factory(hub, "idle", capacity=2).wait_ready(token)
    hub.api("PUT", "/api/v1/fallback-mode/", token=token, body={"enabled": True})
    task = submit(hub, token, agent_id="echo", input="x", strategy="golem")
    done = wait_task(hub, token, task["session_id"], "succeeded")
    assert done["route"] == "local" and "fallback mode" in done["route_reason"]
    hub.api("PUT", "/api/v1/fallback-mode/", token=token, body={"enabled": False})
    task = submit(hub, token, agent_id="echo", input="x", strategy="golem")
    assert wait_task(hub, token, task["session_id"], "succeeded")["node"] == "idle"
