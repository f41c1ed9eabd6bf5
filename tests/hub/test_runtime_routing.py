"""Routing a golem attempt (DESIGN §10): the routing write is queued without a wait so that
the bind decided next lands in the same batch, conditional on it; when the routing is
refused (another hub process routed the attempt first, or it was cancelled meanwhile),
nothing else happens to the attempt here: no bind, no wait queue, no local fallback."""

from __future__ import annotations

from typing import Any

import pytest
from runtime_support import bound_task, eventually, node_row, pending_task, ready_node, task_row

from hivemind_web.hub.execution import writer as writer_module
from hivemind_web.hub.execution.runtime import Runtime
from hivemind_web.hub.intents import AttemptSpec
from hivemind_web.hub.models import Task, TaskAttempt
from hivemind_web.hub.services import tasks as task_services

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def spec_of(session_id: str) -> AttemptSpec:
    return AttemptSpec.of(Task.objects.select_related("team").get(session_id=session_id))


def routed_elsewhere(session_id: str) -> None:
    """What another hub process's routing of the attempt wrote."""
    Task.objects.filter(session_id=session_id).update(
        owner="other-hub", route="golem", route_reason="strategy golem"
    )


def events(session_id: str) -> list[str]:
    return list(Task.objects.get(session_id=session_id).events.values_list("kind", flat=True))


async def test_the_routing_and_the_bind_of_a_golem_attempt_share_one_batch(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await runtime.write(ready_node, "n1")
    await runtime.scheduler.resync()
    sid = await runtime.write(pending_task)
    batches: list[list[str]] = []
    apply = writer_module._apply

    def spy(batch: list[Any], batched: Any) -> Any:
        batches.append([getattr(call.fn, "__name__", "") for call in batch])
        return apply(batch, batched)

    monkeypatch.setattr(writer_module, "_apply", spy)
    runtime.spawn(runtime.run_attempt(await runtime.write(spec_of, sid)))
    await eventually(lambda: any("task_bind" in names for names in batches))
    assert any({"task_mark_routed", "task_bind"} <= set(names) for names in batches)
    task = await runtime.write(task_row, sid)
    assert (task.status, task.node.name, task.owner) == ("scheduled", "n1", runtime.instance)
    assert (await runtime.write(events, sid))[-2:] == ["routed", "scheduled"]
    record = await runtime.write(lambda: TaskAttempt.objects.get(task__session_id=sid))
    assert (record.route, record.node, record.status) == ("golem", "n1", "scheduled")


@pytest.mark.parametrize(
    ("fleet", "max_wait"),
    [("free", 30.0), ("full", 30.0), ("none", 30.0), ("full", 0.0)],
    ids=[
        "a node is free: no bind",
        "the node is full: not parked",
        "no node at all: no local fallback",
        "the node is full, no wait: no local fallback",
    ],
)
async def test_an_attempt_another_hub_routed_first_is_left_alone(
    runtime: Runtime, fleet: str, max_wait: float
) -> None:
    if fleet != "none":
        await runtime.write(ready_node, "n1", capacity=1)
        if fleet == "full":
            await runtime.write(bound_task, "n1")
        await runtime.scheduler.resync()
    sid = await runtime.write(pending_task)
    await runtime.write(lambda: Task.objects.filter(session_id=sid).update(max_wait=max_wait))
    spec = await runtime.write(spec_of, sid)
    await runtime.write(routed_elsewhere, sid)
    await runtime.run_attempt(spec)  # returns once it gave up
    task = await runtime.write(task_row, sid)
    assert (task.status, task.owner, task.attempts) == ("pending", "other-hub", 1)
    assert task.node_id is None and task.wait_until is None and task.fallback_reason == ""
    assert "scheduled" not in await runtime.write(events, sid)
    assert runtime.local.running == 0 and runtime.local.queued == 0
    assert runtime.scheduler.waiting == 0
    if fleet != "none":
        busy = 1 if fleet == "full" else 0
        assert (await runtime.write(node_row, "n1")).running == busy
        assert runtime.scheduler.cluster.node("n1").running == busy
    assert not runtime.scheduler.routing


async def test_an_attempt_cancelled_while_being_routed_is_not_bound(runtime: Runtime) -> None:
    await runtime.write(ready_node, "n1")
    await runtime.scheduler.resync()
    sid = await runtime.write(pending_task)
    spec = await runtime.write(spec_of, sid)
    await runtime.write(task_services.task_cancel, session_id=sid, actor=None)
    await runtime.run_attempt(spec)
    task = await runtime.write(task_row, sid)
    assert (task.status, task.node_id) == ("cancelled", None)
    assert (await runtime.write(node_row, "n1")).running == 0
