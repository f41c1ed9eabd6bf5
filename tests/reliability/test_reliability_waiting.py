"""Waiting for capacity, priority, pinning, preferences, requirements, timeouts and the
placement record (DESIGN §11), on a real daphne hub with two real ``hivemind-node``
processes of capacity 2, shared by the tests of this module (each waits for its tasks)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import TERMINAL, create_team, events, get_task, running_fleet, submit, wait_task
from support.live import LiveHub, wait_for

pytestmark = pytest.mark.slow

NODES = {"west": ("zone=a", ("--capabilities", "browser")), "east": ("zone=b", ())}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveHub, str, dict]]:
    nodes = {
        name: {"labels": labels, "capacity": 2, "extra_args": extra}
        for name, (labels, extra) in NODES.items()
    }
    with running_fleet(Path(tmp_path_factory.mktemp("waiting")), nodes) as fleet:
        yield fleet


def batch(hub: LiveHub, token: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    status, tasks = hub.api("POST", "/api/v1/tasks/batch/", token=token, body={"tasks": items})
    assert status == 201, tasks
    return tasks


def finish_all(hub: LiveHub, token: str, tasks: list[dict[str, Any]], timeout: float = 60):
    return [wait_task(hub, token, t["session_id"], TERMINAL, timeout=timeout) for t in tasks]


def sleep_task(seconds: float, **fields: Any) -> dict[str, Any]:
    return {"agent_id": "sleep", "input": str(seconds), "strategy": "golem", **fields}


def test_forty_tasks_wait_for_two_nodes_and_none_runs_locally(fleet: Any) -> None:
    hub, token, nodes = fleet
    tasks = batch(hub, token, [sleep_task(0.3, max_wait=60) for _ in range(40)])
    done = finish_all(hub, token, tasks, timeout=90)
    assert {d["status"] for d in done} == {"succeeded"}
    assert {d["route"] for d in done} == {"golem"}, [d["fallback_reason"] for d in done]
    assert {d["node"] for d in done} == {"west", "east"}
    assert all(d["fallback_reason"] == "" for d in done)
    # Most of them waited for a slot, with the reason; none ever held more than two.
    waited = [
        d for d in done if any(k == "waiting" for k, _, _ in events(hub, token, d["session_id"]))
    ]
    assert len(waited) >= 30
    for node in nodes.values():
        assert node.stats()["peak_running"] <= 2


def test_with_max_wait_zero_the_overflow_falls_back_at_once(fleet: Any) -> None:
    hub, token, _ = fleet
    tasks = batch(hub, token, [sleep_task(1, max_wait=0) for _ in range(12)])
    done = finish_all(hub, token, tasks)
    remote = [d for d in done if d["route"] == "golem"]
    local = [d for d in done if d["route"] == "local"]
    assert len(remote) <= 4 and len(local) >= 8
    for task in local:
        assert task["fallback_reason"] == "scheduling failed: 0/2 nodes available: 2 at capacity"
        assert "waiting" not in [k for k, _, _ in events(hub, token, task["session_id"])]


def test_a_later_higher_priority_task_starts_before_earlier_ones(fleet: Any) -> None:
    hub, token, _ = fleet
    # One slot frees first, the other three later: the first free slot is what priority
    # decides (slots that free together are filled in one go, highest priority first, and
    # then which run reports its start first is the nodes' race).
    fillers = batch(hub, token, [sleep_task(s, max_wait=60) for s in (2, 4, 4, 4)])
    for filler in fillers:
        wait_task(hub, token, filler["session_id"], "running", timeout=20)
    ordinary = batch(hub, token, [sleep_task(0.2, max_wait=60) for _ in range(3)])
    wait_for(
        lambda: all(get_task(hub, token, t["session_id"])["waiting_reason"] for t in ordinary),
        timeout=10,
        what="the priority-0 tasks waiting",
    )
    urgent = submit(hub, token, **sleep_task(0.2, max_wait=60, priority=10))
    done = finish_all(hub, token, [*fillers, *ordinary, urgent])
    assert {d["status"] for d in done} == {"succeeded"} and {d["route"] for d in done} == {"golem"}
    first = get_task(hub, token, urgent["session_id"])["started_at"]
    assert all(first < get_task(hub, token, t["session_id"])["started_at"] for t in ordinary)


def placed_on(hub: LiveHub, token: str, **fields: Any) -> dict[str, Any]:
    task = submit(hub, token, agent_id="echo", input="x", strategy="golem", **fields)
    return wait_task(hub, token, task["session_id"], TERMINAL)


def test_node_pins_and_preferred_labels_win_a_tie_but_never_a_filter(fleet: Any) -> None:
    hub, token, _ = fleet
    assert placed_on(hub, token, node="east")["node"] == "east"
    assert placed_on(hub, token, node="west")["node"] == "west"
    # Both nodes idle: a tie the preference breaks, either way.
    assert placed_on(hub, token, prefer_labels={"zone": "b"})["node"] == "east"
    assert placed_on(hub, token, prefer_labels={"zone": "a"})["node"] == "west"
    # A preference is never a filter: the selector still rules.
    done = placed_on(hub, token, node_selector={"zone": "a"}, prefer_labels={"zone": "b"})
    assert done["node"] == "west"
    record = done["placement"]
    # The label index never even offers the other node to the decision.
    assert record["chosen"] == "west" and record["feasible"] == 1


def test_capabilities_and_resources_exclude_nodes_with_the_reason_named(fleet: Any) -> None:
    hub, token, _ = fleet
    assert placed_on(hub, token, capabilities=["browser"])["node"] == "west"
    # Nobody offers it, and nobody ever will: no waiting.
    missing = placed_on(hub, token, capabilities=["gpu_inference"], max_wait=60)
    assert missing["route"] == "local"
    assert "2 missing capabilities gpu_inference" in missing["fallback_reason"]
    assert missing["placement"]["rejected"] == {"missing capabilities gpu_inference": 2}
    fits = placed_on(hub, token, resources={"min_free_memory_mb": 1})
    assert fits["route"] == "golem"
    # Heartbeat figures may change: the task waits, then falls back with the reason.
    huge = placed_on(hub, token, resources={"min_free_memory_mb": 10**9}, max_wait=1)
    assert huge["route"] == "local"
    assert huge["fallback_reason"].startswith("waited 1s for a node: 0/2 nodes available: 2 less")
    assert "MB memory free" in huge["fallback_reason"]


def test_placement_lists_candidates_feasible_count_and_scores_per_plugin(fleet: Any) -> None:
    hub, token, _ = fleet
    done = placed_on(hub, token)
    record = done["placement"]
    assert record["evaluated"] == 2 and record["feasible"] == 2
    assert record["chosen"] == done["node"]
    assert record["candidates"][0]["node"] == done["node"]  # best first
    assert {c["node"] for c in record["candidates"]} == {"west", "east"}
    for candidate in record["candidates"]:
        assert candidate["scores"] and isinstance(candidate["total"], float | int)
    status, attempts = hub.api("GET", f"/api/v1/tasks/{done['session_id']}/attempts/", token=token)
    assert status == 200 and attempts["results"][0]["placement"]["chosen"] == done["node"]


def test_a_run_past_its_timeout_fails_timed_out_on_a_node_and_locally(fleet: Any) -> None:
    hub, token, nodes = fleet
    remote = submit(hub, token, agent_id="sleep", input="5", strategy="golem", timeout=1)
    local = submit(hub, token, agent_id="sleep", input="5", strategy="local", timeout=1)
    for task in (remote, local):
        done = wait_task(hub, token, task["session_id"], TERMINAL, timeout=20)
        assert (done["status"], done["error"]) == ("failed", "timed out after 1s")
    # The node was told to stop: its slot is free again and it runs nothing.
    node = get_task(hub, token, remote["session_id"])
    assert node["route"] == "golem"
    wait_for(
        lambda: all(
            hub.api("GET", f"/api/v1/nodes/{n}/", token=token)[1]["running"] == 0 for n in nodes
        ),
        timeout=10,
        what="the nodes idle again",
    )


def test_a_retry_team_retries_a_timed_out_task(fleet: Any) -> None:
    hub, token, _ = fleet
    create_team(hub, token, "patient", "retry", max_retries=1)
    task = submit(
        hub, token, agent_id="sleep", input="5", strategy="golem", team="patient", timeout=1
    )
    done = wait_task(hub, token, task["session_id"], TERMINAL, timeout=30)
    assert (done["status"], done["attempts"], done["error"]) == ("failed", 2, "timed out after 1s")
    kinds = [k for k, _, _ in events(hub, token, task["session_id"])]
    assert kinds.count("attempt_failed") == 1 and "retry" in kinds
    # The retry never went back to the node of the first attempt.
    assert len(set(done["excluded_nodes"])) == 1


@pytest.mark.redis
@pytest.mark.postgres
def test_two_hubs_share_a_wait_queue_of_a_hundred_and_place_each_task_once(
    hub_factory: Any, node_factory: Any, postgres_url: str, redis_url: str
) -> None:
    shared = {"database_url": postgres_url, "redis_url": redis_url}
    front = hub_factory("front", instance="front", **shared)
    back = hub_factory("back", instance="back", **shared)
    token = front.create_user("alice", "admin")
    # One node on each hub: a slot freed on either one is filled from the one queue.
    nodes = [node_factory(front, "one", capacity=2), node_factory(back, "two", capacity=2)]
    for node in nodes:
        node.wait_ready(token)
    items = [sleep_task(0.1, max_wait=300) for _ in range(50)]
    tasks = [(front, t) for t in batch(front, token, items)]
    tasks += [(back, t) for t in batch(back, token, items)]
    done = [wait_task(h, token, t["session_id"], TERMINAL, timeout=180) for h, t in tasks]
    assert {d["status"] for d in done} == {"succeeded"}
    assert {d["route"] for d in done} == {"golem"}, {d["fallback_reason"] for d in done}
    for hub, task in tasks:
        kinds = [k for k, _, _ in events(hub, token, task["session_id"])]
        assert kinds.count("scheduled") == 1 and kinds.count("started") == 1, kinds
    stats = [node.stats() for node in nodes]
    assert sum(s["started"] for s in stats) == 100  # each run once, on some node
    assert all(s["peak_running"] <= 2 for s in stats)
