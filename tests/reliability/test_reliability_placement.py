"""Placement on real nodes: selectors, the five affinity policies, the reverse index, capacity.

A real daphne hub and three real ``hivemind-node`` processes, shared by the tests of this
module (each test uses its own team names, and waits for its tasks to end).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    events,
    get_task,
    nodes_of_team,
    running_fleet,
    submit,
    tasks_on_node,
    wait_task,
)
from support.live import LiveHub, wait_for

pytestmark = pytest.mark.slow

NODES = {
    "alpha": "zone=a,gpu=true",
    "beta": "zone=a,gpu=false",
    "gamma": "zone=b,gpu=false",
}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveHub, str, dict]]:
    nodes = {name: {"labels": labels, "capacity": 3} for name, labels in NODES.items()}
    with running_fleet(Path(tmp_path_factory.mktemp("placement")), nodes) as fleet:
        yield fleet


def run_all(hub: LiveHub, token: str, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        wait_task(hub, token, t["session_id"], {"succeeded", "failed", "cancelled"}) for t in tasks
    ]


def running(hub: LiveHub, token: str, sid: str) -> dict[str, Any]:
    return wait_task(hub, token, sid, {"running", "succeeded"}, timeout=20)


def test_a_selector_places_tasks_only_on_matching_nodes(fleet: Any) -> None:
    hub, token, _ = fleet
    tasks = [
        submit(
            hub, token, agent_id="sleep", input="1", strategy="golem", node_selector={"zone": "a"}
        )
        for _ in range(4)
    ]
    placed = {running(hub, token, t["session_id"])["node"] for t in tasks}
    assert placed <= {"alpha", "beta"} and placed
    gpu = submit(
        hub, token, agent_id="echo", input="x", strategy="golem", node_selector={"gpu": "true"}
    )
    done = wait_task(hub, token, gpu["session_id"], "succeeded")
    assert done["node"] == "alpha", (done["route_reason"], done["fallback_reason"])
    run_all(hub, token, tasks)


def test_a_selector_nobody_matches_falls_back_to_local_with_the_reason(fleet: Any) -> None:
    hub, token, _ = fleet
    task = submit(
        hub, token, agent_id="echo", input="hi", strategy="golem", node_selector={"zone": "mars"}
    )
    done = wait_task(hub, token, task["session_id"], "succeeded")
    assert (done["route"], done["node"], done["output"]) == ("local", None, "hi")
    assert "zone=mars" in done["fallback_reason"]


def test_require_spread_puts_each_member_on_its_own_node_and_the_extra_one_local(
    fleet: Any,
) -> None:
    hub, token, _ = fleet
    members = [
        submit(
            hub,
            token,
            agent_id="sleep",
            input="3",
            strategy="golem",
            team="spread-hard",
            affinity="require_spread",
            max_wait=0,  # the Go package's immediate fallback: no waiting for a member to end
        )
        for _ in range(4)
    ]
    placed = [running(hub, token, m["session_id"]) for m in members]
    remote = [p["node"] for p in placed if p["route"] == "golem"]
    local = [p for p in placed if p["route"] == "local"]
    assert sorted(remote) == ["alpha", "beta", "gamma"]
    assert len(local) == 1 and "require_spread" in local[0]["fallback_reason"]
    # The reverse index agrees with reality while they run.
    assert nodes_of_team(hub, token, "spread-hard") == set(remote)
    for node in NODES:
        on_node = tasks_on_node(hub, token, node)
        assert {p["session_id"] for p in placed if p["node"] == node} <= on_node
    run_all(hub, token, members)
    assert nodes_of_team(hub, token, "spread-hard") == set()


def test_require_colocate_keeps_the_team_on_one_node(fleet: Any) -> None:
    hub, token, _ = fleet
    first = submit(
        hub,
        token,
        agent_id="sleep",
        input="3",
        strategy="golem",
        team="colo-hard",
        affinity="require_colocate",
    )
    home = running(hub, token, first["session_id"])["node"]
    others = [
        submit(
            hub,
            token,
            agent_id="sleep",
            input="1",
            strategy="golem",
            team="colo-hard",
            affinity="require_colocate",
        )
        for _ in range(2)
    ]
    assert {running(hub, token, o["session_id"])["node"] for o in others} == {home}
    assert nodes_of_team(hub, token, "colo-hard") == {home}
    run_all(hub, token, [first, *others])


def test_prefer_colocate_joins_the_team_where_it_runs(fleet: Any) -> None:
    hub, token, _ = fleet
    first = submit(
        hub,
        token,
        agent_id="sleep",
        input="3",
        strategy="golem",
        team="colo-soft",
        affinity="prefer_colocate",
    )
    home = running(hub, token, first["session_id"])["node"]
    second = submit(
        hub,
        token,
        agent_id="sleep",
        input="1",
        strategy="golem",
        team="colo-soft",
        affinity="prefer_colocate",
    )
    assert running(hub, token, second["session_id"])["node"] == home
    run_all(hub, token, [first, second])


def test_prefer_spread_uses_distinct_nodes_while_it_can(fleet: Any) -> None:
    hub, token, _ = fleet
    members = []
    for _ in range(3):
        members.append(
            submit(
                hub,
                token,
                agent_id="sleep",
                input="3",
                strategy="golem",
                team="spread-soft",
                affinity="prefer_spread",
            )
        )
        running(hub, token, members[-1]["session_id"])
    assert sorted(get_task(hub, token, m["session_id"])["node"] for m in members) == sorted(NODES)
    run_all(hub, token, members)


def test_no_policy_takes_the_least_loaded_node(fleet: Any) -> None:
    hub, token, _ = fleet
    busy = [
        submit(
            hub, token, agent_id="sleep", input="3", strategy="golem", node_selector={"zone": "a"}
        )
        for _ in range(2)
    ]
    busy_nodes = [running(hub, token, b["session_id"])["node"] for b in busy]
    # Least loaded first: the two zone=a tasks went to different nodes.
    assert sorted(busy_nodes) == ["alpha", "beta"]
    free = submit(hub, token, agent_id="echo", input="x", strategy="golem")
    assert wait_task(hub, token, free["session_id"], "succeeded")["node"] == "gamma"
    # The scheduler's explanation of the placement is on the audit trail.
    scheduled = [d for k, _, d in events(hub, token, free["session_id"]) if k == "scheduled"]
    assert "feasible nodes" in scheduled[0]["placement"]
    run_all(hub, token, busy)


def test_two_hundred_tasks_never_overcommit_a_node(
    tmp_path: Path, hub_factory: Any, node_factory: Any
) -> None:
    hub = hub_factory("capacity", extra_env={"HIVEMIND_LOCAL_CONCURRENCY": "4"})
    token = hub.create_user("alice", "admin")
    nodes = [node_factory(hub, f"cap-{i}", capacity=2) for i in range(3)]
    for node in nodes:
        node.wait_ready(token)
    tasks = [
        submit(hub, token, agent_id="sleep", input="0.2", strategy="golem") for _ in range(200)
    ]
    done = run_all(hub, token, tasks)
    failed = [(t["error"], t["fallback_reason"]) for t in done if t["status"] != "succeeded"]
    assert not failed, failed[:5]
    remote = [t for t in done if t["route"] == "golem"]
    assert remote, "no task ran on a node"
    for node in nodes:
        stats = wait_for(node.stats, timeout=5, what=f"{node.name} stats")
        # The node agent counts its own concurrency: never above its capacity.
        assert stats["peak_running"] <= 2, stats
    assert sum(n.stats()["started"] for n in nodes) == len(remote)
    # Every slot was given back.
    _, listed = hub.api("GET", "/api/v1/nodes/", token=token)
    assert all(n["running"] == 0 for n in listed["results"])
