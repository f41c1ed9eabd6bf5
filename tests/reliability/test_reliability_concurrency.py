"""Concurrent operators against a real hub, on SQLite and on PostgreSQL; two hub processes
sharing PostgreSQL and Redis."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from helpers import TERMINAL, events, submit, wait_task
from support.live import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return ""
    return request.getfixturevalue("postgres_url")


def test_fifty_concurrent_submissions_and_cancels_leave_no_impossible_state(
    hub_factory: Any, database_url: str
) -> None:
    hub = hub_factory(database_url=database_url)
    token = hub.create_user("alice", "admin")

    def operator(i: int) -> tuple[str, int]:
        task = submit(hub, token, agent_id="sleep", input=str(0.05 * (i % 5)), strategy="local")
        if i % 2:
            status, _ = hub.api("POST", f"/api/v1/tasks/{task['session_id']}/cancel/", token=token)
            return task["session_id"], status
        return task["session_id"], 0

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(operator, range(50)))
    # A second wave of cancels races the executions themselves.
    with ThreadPoolExecutor(max_workers=16) as pool:
        late = list(
            pool.map(
                lambda r: hub.api("POST", f"/api/v1/tasks/{r[0]}/cancel/", token=token)[0],
                [r for r in results if r[1] == 0][:10],
            )
        )
    assert set(late) <= {200, 409}
    for sid, cancel_status in results:
        task = wait_task(hub, token, sid, TERMINAL, timeout=60)
        kinds = [k for k, _, _ in events(hub, token, sid)]
        terminal_events = [k for k in kinds if k in TERMINAL]
        assert len(terminal_events) == 1, kinds
        assert terminal_events[0] == task["status"]
        assert kinds.count("started") <= 1
        assert task["finished_at"] is not None
        if cancel_status == 200:
            assert task["status"] == "cancelled"
        elif cancel_status == 409:
            assert task["status"] == "succeeded"
        if task["status"] == "succeeded":
            assert task["progress"] == 100.0 and task["output"].startswith("slept")


@pytest.mark.redis
@pytest.mark.postgres
def test_two_hub_processes_share_the_work_through_postgres_and_redis(
    hub_factory: Any, node_factory: Any, postgres_url: str, redis_url: str
) -> None:
    # One local slot on the front hub: a later local run can only start once a cancel sent
    # to the back hub has really stopped the front hub's agent.
    front = hub_factory(
        "front",
        database_url=postgres_url,
        redis_url=redis_url,
        instance="front",
        extra_env={"HIVEMIND_LOCAL_CONCURRENCY": "1"},
    )
    back = hub_factory("back", database_url=postgres_url, redis_url=redis_url, instance="back")
    token = front.create_user("alice", "admin")
    # The node is connected to the back hub only; work is submitted to both.
    node = node_factory(back, "shared", capacity=2)
    wait_for(
        lambda: front.api("GET", "/api/v1/nodes/shared/", token=token)[1].get("status") == "ready",
        timeout=20,
        what="the node ready, seen from the front hub",
    )
    tasks = []
    for i in range(12):
        hub = back if i % 2 else front  # the front hub first: it meets a free node
        tasks.append((hub, submit(hub, token, agent_id="sleep", input="0.3", strategy="golem")))
    done = [wait_task(hub, token, t["session_id"], TERMINAL, timeout=60) for hub, t in tasks]
    assert {d["status"] for d in done} == {"succeeded"}
    remote_from_front = [
        d for (hub, _), d in zip(tasks, done, strict=True) if hub is front and d["route"] == "golem"
    ]
    reasons = [d["route_reason"] for (hub, _), d in zip(tasks, done, strict=True) if hub is front]
    assert remote_from_front, f"the front hub never reached the node through Redis: {reasons}"
    assert node.stats()["peak_running"] <= 2
    # A local run lives in the process that routed it; a cancel sent to the other stops it.
    local = submit(front, token, agent_id="sleep", input="30", strategy="local")
    wait_task(front, token, local["session_id"], "running")
    status, _ = back.api("POST", f"/api/v1/tasks/{local['session_id']}/cancel/", token=token)
    assert status == 200
    other = submit(front, token, agent_id="echo", input="after", strategy="local")
    assert wait_task(front, token, other["session_id"], "succeeded")["output"] == "after"
