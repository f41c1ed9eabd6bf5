"""Operators racing another hub's binds on PostgreSQL: a cancel or a force fallback that
waits for a task's row lock while another hub process binds that task reads the task's node
as it is after the wait, so it is never answered with a 500 and never lost."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from helpers import TERMINAL, events, wait_task
from support.live import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

CANCELS, FALLBACKS = 150, 200
BATCH = 50


def test_cancels_and_force_fallbacks_racing_binds_on_another_hub_never_fail(
    hub_factory: Any, node_factory: Any, postgres_url: str, redis_url: str
) -> None:
    common = {"database_url": postgres_url, "redis_url": redis_url}
    binder = hub_factory("binder", instance="binder", **common)
    operator = hub_factory(
        "operator", instance="operator", extra_env={"HIVEMIND_LOCAL_CONCURRENCY": "16"}, **common
    )
    token = binder.create_user("alice", "admin")
    nodes = [node_factory(binder, f"n{i}", capacity=16) for i in range(2)]
    for node in nodes:
        node.wait_ready(token)
    # Interleaved, so both kinds meet binds: 3 cancels in every 7 actions.
    kinds = ["cancel" if i % 7 < 3 else "fallback" for i in range(CANCELS + FALLBACKS)]
    assert Counter(kinds) == {"cancel": CANCELS, "fallback": FALLBACKS}

    def act(kind: str, sid: str) -> tuple[str, str, int, Any]:
        status, body = operator.api("POST", f"/api/v1/tasks/{sid}/{kind}/", token=token)
        return kind, sid, status, body

    futures = []
    with ThreadPoolExecutor(max_workers=8) as pool:
        for start in range(0, len(kinds), BATCH):
            status, batch = binder.api(
                "POST",
                "/api/v1/tasks/batch/",
                token=token,
                body={
                    "tasks": [
                        {"agent_id": "sleep", "input": "0.5", "strategy": "golem"}
                        for _ in kinds[start : start + BATCH]
                    ]
                },
            )
            assert status == 201, batch
            for kind, task in zip(kinds[start : start + BATCH], batch, strict=True):
                futures.append(pool.submit(act, kind, task["session_id"]))
        results = [f.result() for f in futures]
    answers = Counter((kind, status) for kind, _, status, _ in results)
    errors = [(kind, status, body) for kind, _, status, body in results if status not in (200, 409)]
    assert not errors, f"{answers}: {errors[:5]}"
    for kind, sid, status, _ in results:
        done = wait_task(operator, token, sid, TERMINAL, timeout=120)
        if kind == "cancel" and status == 200:
            assert done["status"] == "cancelled", done
        elif kind == "fallback" and status == 200:
            assert (done["status"], done["route"]) == ("succeeded", "local"), (
                done["error"],
                events(operator, token, sid),
            )
        else:
            assert done["status"] in TERMINAL
    # Every slot the binds took was given back.
    for node in nodes:
        wait_for(
            lambda n=node: (
                binder.api("GET", f"/api/v1/nodes/{n.name}/", token=token)[1]["running"] == 0
            ),
            timeout=30,
            what=f"{node.name}'s slots given back",
        )
    print("answers:", dict(answers))
