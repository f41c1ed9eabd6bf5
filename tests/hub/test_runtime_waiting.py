"""Waiting for capacity (DESIGN §11) on a real hub runtime: a task no node can take now waits
in the database's queue with its reason, is placed when room appears (highest priority first,
then oldest), and falls back past its deadline; constraints nobody can ever meet fall back
at once. No node process here: a placed task stays ``scheduled`` (nobody accepts it)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from runtime_support import WAIT, bound_task, eventually, node_row, ready_node, task_row

from hivemind_web.hub.execution.reaper import unclaimed_pending
from hivemind_web.hub.execution.runtime import Runtime
from hivemind_web.hub.intents import AttemptSpec
from hivemind_web.hub.models import Task, TaskAttempt
from hivemind_web.hub.services import submission
from hivemind_web.hub.services import tasks as task_services
from hivemind_web.hub.services import teams as team_services
from hivemind_web.hub.services.transitions import BIND_NODE_FULL
from hivemind_web.hub.services.waiting import (
    NOT_WAITING,
    PARKED,
    claim_many,
    task_park,
    tasks_claim_waiting,
    waiting_heads,
)

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def submit(**fields: Any) -> str:
    fields = {"agent_id": "echo", "input": "hi", "strategy": "golem", **fields}
    return str(submission.task_submit(actor=None, **fields).session_id)


def waiting(session_id: str) -> bool:  # a read for the writer's thread
    task = Task.objects.get(session_id=session_id)
    return task.status == "pending" and task.wait_until is not None


def on_node(session_id: str) -> str | None:
    task = task_row(session_id)
    return task.node.name if task.status == "scheduled" and task.node_id else None


async def check(runtime: Runtime, fn: Any, *args: Any) -> Any:
    return await runtime.write(fn, *args)


async def finished(runtime: Runtime, session_id: str, timeout: float = WAIT) -> Task:
    """The task once it reached a terminal status (read through the runtime's writer)."""
    deadline = time.monotonic() + timeout
    while True:
        task = await runtime.write(task_row, session_id)
        if task.is_terminal or time.monotonic() > deadline:
            return task
        await asyncio.sleep(0.02)


async def full_node(runtime: Runtime, name: str = "n1") -> str:
    """A ready node of capacity 1 already holding a task; returns that task."""
    await runtime.write(ready_node, name, capacity=1)
    busy = await runtime.write(bound_task, name)
    await runtime.scheduler.resync()
    return busy


async def free(runtime: Runtime, session_id: str) -> None:
    await runtime.write(
        task_services.task_finish, session_id=session_id, attempt=1, status="succeeded"
    )


async def test_a_task_no_node_can_take_now_waits_with_the_reason(runtime: Runtime) -> None:
    await full_node(runtime)
    sid = await runtime.write(submit, max_wait=30)
    await eventually(lambda: runtime.wait_queue.placed == 0 and runtime.scheduler.waiting == 1)
    task = await runtime.write(task_row, sid)
    assert (task.status, task.waiting_reason) == ("pending", "0/1 nodes available: 1 at capacity")
    assert task.wait_until is not None and task.owner == ""
    record = await runtime.write(lambda: TaskAttempt.objects.get(task__session_id=sid))
    assert record.status == "waiting"
    # The failed decision, kept on the attempt: what the scheduler looked at.
    assert record.placement["feasible"] == 0 and record.placement["chosen"] is None
    assert record.placement["rejected"] == {"at capacity": 1}
    kinds = await runtime.write(
        lambda: list(Task.objects.get(session_id=sid).events.values_list("kind", flat=True))
    )
    assert kinds[-1] == "waiting"


async def test_a_freed_slot_goes_to_the_highest_priority_then_the_oldest(
    runtime: Runtime,
) -> None:
    busy = await full_node(runtime)
    first = await runtime.write(submit, max_wait=30)
    second = await runtime.write(submit, max_wait=30)
    urgent = await runtime.write(submit, max_wait=30, priority=10)
    await eventually(lambda: runtime.scheduler.waiting == 3)
    await free(runtime, busy)
    await eventually(lambda: runtime.wait_queue.placed == 1)
    assert await check(runtime, on_node, urgent) == "n1"
    assert await check(runtime, waiting, first) and await check(runtime, waiting, second)
    await free(runtime, urgent)
    await eventually(lambda: runtime.wait_queue.placed == 2)
    assert await check(runtime, on_node, first) == "n1"
    assert await check(runtime, waiting, second)
    placed = await runtime.write(task_row, first)
    assert placed.waiting_reason == "" and placed.wait_until is None
    record = await runtime.write(lambda: TaskAttempt.objects.get(task__session_id=first))
    assert record.status == "scheduled" and record.placement["chosen"] == "n1"
    assert record.placement["candidates"][0]["node"] == "n1"
    assert (await runtime.write(node_row, "n1")).running == 1  # never over capacity


async def test_a_new_node_takes_the_waiting_work(runtime: Runtime) -> None:
    await full_node(runtime)
    sid = await runtime.write(submit, max_wait=30)
    await eventually(lambda: runtime.scheduler.waiting == 1)
    await runtime.write(ready_node, "n2", capacity=1)
    await eventually(lambda: runtime.wait_queue.placed == 1)
    assert await check(runtime, on_node, sid) == "n2"


async def test_past_its_max_wait_a_task_falls_back_with_the_reason(runtime: Runtime) -> None:
    await full_node(runtime)
    sid = await runtime.write(submit, max_wait=0.2)
    await eventually(lambda: runtime.scheduler.waiting == 1)

    assert await runtime.wait_queue.expire() == 0  # not yet
    await asyncio.sleep(0.3)
    assert await runtime.wait_queue.expire() == 1
    assert await runtime.wait_queue.expire() == 0  # claimed once
    task_done = await finished(runtime, sid)
    assert task_done.status == "succeeded"
    assert task_done.route == "local"
    assert task_done.fallback_reason == (
        "waited 0.2s for a node: 0/1 nodes available: 1 at capacity"
    )
    assert task_done.waiting_reason == "" and task_done.wait_until is None


@pytest.mark.parametrize(
    "fields",
    [{"max_wait": 0}, {"node_selector": {"gpu": "true"}, "max_wait": 30}],
    ids=["max-wait-0", "no-node-ever-matches"],
)
async def test_it_falls_back_at_once_when_waiting_cannot_help(
    runtime: Runtime, fields: dict[str, Any]
) -> None:
    await full_node(runtime)
    sid = await runtime.write(submit, **fields)
    task = await finished(runtime, sid)
    assert (task.status, task.route, task.waiting_reason) == ("succeeded", "local", "")
    assert task.fallback_reason.startswith("scheduling failed: 0/1 nodes available")
    record = await runtime.write(lambda: TaskAttempt.objects.get(task__session_id=sid))
    assert record.placement["feasible"] == 0  # the failed decision, kept on the attempt
    assert runtime.scheduler.waiting == 0


async def test_a_team_default_max_wait_applies_to_its_tasks(runtime: Runtime) -> None:
    await runtime.write(team_services.team_create, name="quick", max_wait=0)
    await runtime.write(team_services.team_create, name="patient")
    quick = await runtime.write(submit, team="quick", start=False)
    patient = await runtime.write(submit, team="patient", start=False)
    own = await runtime.write(submit, team="quick", max_wait=5, start=False)

    def spec(sid: str) -> AttemptSpec:
        return AttemptSpec.of(Task.objects.select_related("team").get(session_id=sid))

    assert (await runtime.write(spec, quick)).max_wait == 0
    assert (await runtime.write(spec, patient)).max_wait == 30  # HIVEMIND_SCHEDULE_WAIT
    assert (await runtime.write(spec, own)).max_wait == 5


async def test_the_reaper_leaves_waiting_tasks_to_the_queue(runtime: Runtime) -> None:
    await full_node(runtime)
    sid = await runtime.write(submit, max_wait=30)
    await eventually(lambda: runtime.scheduler.waiting == 1)
    assert sid not in {spec.session_id for spec in await runtime.write(unclaimed_pending)}


async def test_two_claims_of_one_waiting_task_place_it_once(runtime: Runtime) -> None:
    await runtime.write(ready_node, "n1", capacity=1)
    await runtime.write(ready_node, "n2", capacity=1)
    sid = await runtime.write(submit, start=False)
    await runtime.write(
        task_services.task_mark_routed, session_id=sid, attempt=1, route="golem", reason="x"
    )
    outcome = await runtime.write(
        task_park, session_id=sid, attempt=1, reason="0/2 nodes available", max_wait=30
    )
    assert outcome == PARKED

    def claim(node: str) -> Any:
        call = {"session_id": sid, "attempt": 1, "node_name": node, "reason": "", "score": 0}
        return tasks_claim_waiting(claims=[call], owner=f"hub-{node}")[0]

    won = await runtime.write(claim, "n1")
    lost = await runtime.write(claim, "n2")
    assert isinstance(won, AttemptSpec) and won.input == "hi"
    assert lost == NOT_WAITING
    assert [(await runtime.write(node_row, n)).running for n in ("n1", "n2")] == [1, 0]
    assert await check(runtime, on_node, sid) == "n1"


def test_fills_claimed_in_one_batch_each_get_their_own_outcomes() -> None:
    # The services alone: a running hub's own wait queue would claim these tasks first.
    ready_node("n1", capacity=1)
    sids = []
    for _ in range(3):
        sid = submit(start=False)
        task_services.task_mark_routed(
            session_id=sid, attempt=1, route="golem", reason="x", owner="h"
        )
        assert task_park(session_id=sid, attempt=1, reason="full", max_wait=30) == PARKED
        sids.append(sid)

    def claim(sid: str) -> dict[str, Any]:
        return {"session_id": sid, "attempt": 1, "node_name": "n1", "reason": "", "score": 0}

    # Two fills (one claims two tasks) gathered: the node has one slot.
    first, second = claim_many(
        [
            {"claims": [claim(sids[0]), claim(sids[1])], "owner": "h"},
            {"claims": [claim(sids[2])], "owner": "h"},
        ]
    )
    assert isinstance(first[0], AttemptSpec) and first[0].session_id == sids[0]
    assert first[1] == second[0] == BIND_NODE_FULL
    assert node_row("n1").running == 1
    waiting = {spec.session_id for spec, _ in waiting_heads(limit=10)}
    assert waiting == {sids[1], sids[2]}  # back in the queue as they were


async def test_an_auto_task_queued_locally_goes_to_a_node_that_frees_up(
    runtime: Runtime,
) -> None:
    busy = await full_node(runtime)
    # The hub's one local slot is taken, so the auto task queues behind it.
    await runtime.write(submit, agent_id="sleep", input="5", strategy="local")
    await eventually(lambda: runtime.local.running == 1)
    sid = await runtime.write(submit, strategy="auto")
    await eventually(lambda: runtime.local.queued == 1)
    assert sid in runtime.wait_queue.offerable
    await free(runtime, busy)
    await eventually(lambda: runtime.wait_queue.placed == 1)
    assert await check(runtime, on_node, sid) == "n1"
    assert runtime.local.queued == 0 and sid not in runtime.wait_queue.offerable
    task = await runtime.write(task_row, sid)
    assert task.route_reason == "auto: a node freed up while it waited in the local queue"


async def test_force_fallback_takes_a_waiting_task_out_of_the_queue(runtime: Runtime) -> None:
    busy = await full_node(runtime)
    sid = await runtime.write(submit, max_wait=30)
    await eventually(lambda: runtime.scheduler.waiting == 1)
    await runtime.write(task_services.task_force_fallback, session_id=sid, actor="olga")
    task = await finished(runtime, sid)
    assert (task.status, task.route, task.attempts) == ("succeeded", "local", 2)
    assert task.wait_until is None and task.waiting_reason == ""
    await free(runtime, busy)  # the freed slot finds nothing to place
    await asyncio.sleep(0.1)
    assert runtime.wait_queue.placed == 0


async def test_a_task_pinned_to_a_busy_node_waits_for_that_node(runtime: Runtime) -> None:
    busy = await full_node(runtime, "n1")
    await runtime.write(ready_node, "n2", capacity=1)
    await runtime.scheduler.resync()
    sid = await runtime.write(submit, node="n1", max_wait=30)
    await eventually(lambda: runtime.scheduler.waiting == 1)
    task = await runtime.write(task_row, sid)
    assert task.waiting_reason == "0/2 nodes available: node n1 at capacity"
    await free(runtime, busy)
    await eventually(lambda: runtime.wait_queue.placed == 1)
    assert await check(runtime, on_node, sid) == "n1"


async def test_tasks_at_the_head_that_fit_no_free_node_do_not_hide_one_behind_them(
    runtime: Runtime,
) -> None:
    await full_node(runtime, "n1")
    busy = await full_node(runtime, "n2")
    # More tasks pinned to busy n1 than the first page of the queue holds, then one any
    # node may take.
    pinned = [await runtime.write(submit, node="n1", max_wait=30) for _ in range(3 * 8)]
    anywhere = await runtime.write(submit, max_wait=30)
    await eventually(lambda: runtime.scheduler.waiting == len(pinned) + 1)
    await free(runtime, busy)  # a slot on n2: only the last task in the queue fits it
    await eventually(lambda: runtime.wait_queue.placed == 1)
    assert await check(runtime, on_node, anywhere) == "n2"
    assert all([await check(runtime, waiting, sid) for sid in pinned])
