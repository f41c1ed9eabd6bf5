"""The HubScheduler (DESIGN §3, §10): decisions against an in-memory picture of the fleet,
kept current by resyncs numbered on the writer's queue, made safe by the conditional bind."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from runtime_support import bound_task, node_row, pending_task, ready_node, task_row

from executor_core.index import NodeTaskIndex
from executor_core.scheduling import ScheduleRequest
from executor_core.scheduling.types import SchedulingError
from hivemind_web.hub.execution import scheduler as scheduler_module
from hivemind_web.hub.execution.scheduler import ERR_BIND_CONFLICT, HubScheduler
from hivemind_web.hub.execution.writer import GroupWriter
from hivemind_web.hub.models import Node
from hivemind_web.hub.services import tasks as task_services

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def make_scheduler(writer: GroupWriter, retries: int = 3) -> HubScheduler:
    return HubScheduler(writer=writer, index=NodeTaskIndex(), retries=retries)


@pytest.fixture
def scheduler(writer: GroupWriter) -> HubScheduler:
    return make_scheduler(writer)


def request_for(session_id: str, team: str | None = None) -> ScheduleRequest:
    return ScheduleRequest(session_id=session_id, agent_id="echo", team_id=team, attempt=1)


def set_node(name: str, **fields: Any) -> None:
    Node.objects.filter(name=name).update(**fields)


def delete_node(name: str) -> None:
    Node.objects.filter(name=name).delete()


def finish(session_id: str) -> None:
    task_services.task_finish(session_id=session_id, attempt=1, status="succeeded")


async def test_it_picks_up_the_nodes_of_the_database_on_resync(
    writer: GroupWriter, scheduler: HubScheduler
) -> None:
    await writer.run(ready_node, "n1", capacity=3, agents=["echo", "sleep"], labels={"gpu": "a"})
    await writer.run(bound_task, "n1")
    await scheduler.resync()
    info = scheduler.cluster.node("n1")
    assert info is not None
    assert (info.capacity, info.running, info.ready, info.cordoned) == (3, 1, True, False)
    assert dict(info.labels) == {"gpu": "a"}
    assert scheduler.agents == {"echo", "sleep"}
    assert scheduler.resyncs == 1


@pytest.mark.parametrize(
    ("facts", "ready", "cordoned"),
    [
        ({"healthy": False}, False, False),
        ({"cordoned": True}, True, True),
        ({"draining": True}, True, True),
    ],
    ids=["silent", "cordoned", "draining"],
)
async def test_it_takes_readiness_and_cordons_from_the_database(
    writer: GroupWriter,
    scheduler: HubScheduler,
    facts: dict[str, bool],
    ready: bool,
    cordoned: bool,
) -> None:
    await writer.run(ready_node, "n1")
    await scheduler.resync()
    await writer.run(set_node, "n1", **facts)
    await scheduler.resync()
    info = scheduler.cluster.node("n1")
    assert info is not None and (info.ready, info.cordoned) == (ready, cordoned)


async def test_it_forgets_a_node_deleted_from_the_database(
    writer: GroupWriter, scheduler: HubScheduler
) -> None:
    await writer.run(ready_node, "n1")
    await writer.run(ready_node, "n2")
    await scheduler.resync()
    await writer.run(delete_node, "n1")
    await scheduler.resync()
    assert [n.name for n in scheduler.cluster.nodes()] == ["n2"]


async def test_it_binds_what_it_decides_and_counts_the_slot_at_once(
    writer: GroupWriter, scheduler: HubScheduler
) -> None:
    await writer.run(ready_node, "n1", capacity=2)
    sid = await writer.run(pending_task)
    await scheduler.resync()
    placement = await scheduler.schedule(request_for(sid))
    assert placement.node == "n1"
    task = await writer.run(task_row, sid)
    assert (task.status, task.node.name) == ("scheduled", "n1")
    assert scheduler.cluster.node("n1").running == 1
    assert scheduler.index.node_of(sid) == "n1"
    assert scheduler.stats() == {"nodes": 1, "binding": 0}


async def test_it_puts_a_placement_in_the_task_index_while_its_bind_is_in_flight(
    writer: GroupWriter, scheduler: HubScheduler
) -> None:
    await writer.run(ready_node, "n1")
    sid = await writer.run(pending_task, team="red")
    await scheduler.resync()
    bind = asyncio.ensure_future(scheduler.schedule(request_for(sid, team="red")))
    await asyncio.sleep(0)  # decided and queued, not yet applied
    assert scheduler.stats()["binding"] == 1
    # A team mate deciding now sees where this one goes.
    assert scheduler.index.node_of(sid) == "n1"
    assert scheduler.index.get_nodes_by_team("red") == ["n1"]
    await bind
    assert scheduler.index.node_of(sid) == "n1"


@pytest.mark.parametrize("first", ["resync read", "bind"])
async def test_it_counts_a_bind_in_flight_once_whichever_of_it_and_a_resync_read_came_first(
    writer: GroupWriter, scheduler: HubScheduler, first: str
) -> None:
    await writer.run(ready_node, "n1", capacity=2)
    sid = await writer.run(pending_task)
    await scheduler.resync()
    # Both are queued before the writer runs: the read either reflects the bind (queued
    # before it) or not (queued after it, still in flight when the read's answer arrives).
    resync = lambda: asyncio.ensure_future(scheduler.resync())  # noqa: E731
    bind = lambda: asyncio.ensure_future(scheduler.schedule(request_for(sid)))  # noqa: E731
    steps = [resync, bind] if first == "resync read" else [bind, resync]
    results = await asyncio.gather(*(start() for start in steps))
    assert any(getattr(r, "node", None) == "n1" for r in results)
    assert (await writer.run(node_row, "n1")).running == 1
    assert scheduler.cluster.node("n1").running == 1


@pytest.mark.parametrize(
    ("fresh_for", "resyncs", "placed"),
    [(-1.0, 2, True), (3600.0, 1, False)],
    ids=["stale picture: looks again", "fresh picture: fails at once"],
)
async def test_it_looks_at_the_database_again_before_a_stale_picture_fails_a_decision(
    writer: GroupWriter,
    scheduler: HubScheduler,
    monkeypatch: pytest.MonkeyPatch,
    fresh_for: float,
    resyncs: int,
    placed: bool,
) -> None:
    monkeypatch.setattr(scheduler_module, "FRESH_FOR", fresh_for)
    sid = await writer.run(pending_task)
    await scheduler.resync()  # an empty fleet
    # A node joins through another hub process: this one has not heard of it yet.
    await writer.run(ready_node, "n1")
    if placed:
        assert (await scheduler.schedule(request_for(sid))).node == "n1"
        assert (await writer.run(task_row, sid)).status == "scheduled"
    else:
        with pytest.raises(SchedulingError):
            await scheduler.schedule(request_for(sid))
        assert (await writer.run(task_row, sid)).status == "pending"
    assert scheduler.resyncs == resyncs


async def test_it_rereads_a_node_that_filled_up_under_it_and_places_elsewhere(
    writer: GroupWriter, scheduler: HubScheduler
) -> None:
    await writer.run(ready_node, "n1", capacity=1)
    await writer.run(ready_node, "n2", capacity=5)
    sid = await writer.run(pending_task)
    await scheduler.resync()
    # Another hub process takes n1's only slot; this picture still shows it free.
    await writer.run(bound_task, "n1")
    assert scheduler.cluster.node("n1").running == 0
    placement = await scheduler.schedule(request_for(sid))
    assert placement.node == "n2"
    assert (await writer.run(task_row, sid)).node.name == "n2"
    # The lost bind made it read n1 again (no resync happened in between).
    assert scheduler.cluster.node("n1").running == 1
    assert scheduler.resyncs == 1
    assert scheduler.cluster.placement_of(sid).node == "n2"
    assert scheduler.index.node_of(sid) == "n2"


async def test_it_raises_the_bind_conflict_once_every_retry_lost_its_bind(
    writer: GroupWriter,
) -> None:
    scheduler = make_scheduler(writer, retries=1)
    await writer.run(ready_node, "n1", capacity=1)
    sid = await writer.run(pending_task)
    await scheduler.resync()
    await writer.run(bound_task, "n1")
    with pytest.raises(SchedulingError) as raised:
        await scheduler.schedule(request_for(sid))
    assert raised.value.reason == ERR_BIND_CONFLICT.format(node="n1", n=1)
    assert scheduler.cluster.node("n1").running == 1
    assert scheduler.cluster.placement_of(sid) is None
    assert sid not in scheduler.index
    assert (await writer.run(task_row, sid)).status == "pending"


async def test_it_fails_with_the_schedulers_reason_when_the_reread_node_is_really_full(
    writer: GroupWriter, scheduler: HubScheduler
) -> None:
    await writer.run(ready_node, "n1", capacity=1)
    sid = await writer.run(pending_task)
    await scheduler.resync()
    await writer.run(bound_task, "n1")
    with pytest.raises(SchedulingError) as raised:
        await scheduler.schedule(request_for(sid))
    assert "bind conflict" not in raised.value.reason
    assert scheduler.cluster.placement_of(sid) is None
    assert (await writer.run(node_row, "n1")).running == 1


async def test_it_refuses_to_place_a_task_that_is_no_longer_pending(
    writer: GroupWriter, scheduler: HubScheduler
) -> None:
    await writer.run(ready_node, "n1")
    sid = await writer.run(bound_task, "n1")
    await scheduler.resync()
    with pytest.raises(SchedulingError, match=scheduler_module.ERR_NOT_PENDING):
        await scheduler.schedule(request_for(sid))
    # The slot it assumed was given back: only the real bind counts.
    assert scheduler.cluster.node("n1").running == 1


async def test_it_frees_the_slot_in_the_picture_on_release(
    writer: GroupWriter, scheduler: HubScheduler
) -> None:
    await writer.run(ready_node, "n1", capacity=1)
    sid = await writer.run(pending_task)
    await scheduler.resync()
    await scheduler.schedule(request_for(sid))
    assert scheduler.cluster.node("n1").running == 1
    scheduler.release(sid)
    assert scheduler.cluster.node("n1").running == 0
    assert scheduler.cluster.placement_of(sid) is None
    scheduler.release(sid)  # twice changes nothing
    assert scheduler.cluster.node("n1").running == 0


async def test_it_makes_the_task_index_follow_the_database_on_resync(
    writer: GroupWriter, scheduler: HubScheduler
) -> None:
    await writer.run(ready_node, "n1", capacity=3)
    live = await writer.run(bound_task, "n1")
    ended = await writer.run(bound_task, "n1", running=True)
    await scheduler.resync()
    assert sorted(scheduler.index.sessions()) == sorted([live, ended])
    # It ends under another process (nobody tells this one), and a stale entry lingers.
    await writer.run(finish, ended)
    scheduler.index.add("n1", "ghost")
    scheduler.cluster.place(request_for("ghost"))
    await scheduler.resync()
    assert scheduler.index.sessions() == [live]
    assert scheduler.index.node_of(live) == "n1"
    assert scheduler.cluster.placement_of("ghost") is None
    # The ghost's assumed slot is not given back on top of the database's count.
    assert scheduler.cluster.node("n1").running == 1


async def test_it_sees_a_node_change_announced_before_the_decision(
    writer: GroupWriter, scheduler: HubScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The default is 50 ms; a second keeps the picture "fresh" however slow this machine is.
    monkeypatch.setattr(scheduler_module, "FRESH_FOR", 1.0)
    sid = await writer.run(pending_task)
    runner = asyncio.ensure_future(scheduler.run())
    try:
        await scheduler.ready()  # the first picture: an empty fleet
        await writer.run(ready_node, "n1")
        scheduler.wake()  # what the runtime does once the node's hello committed
        placement = await scheduler.schedule(request_for(sid))
    finally:
        runner.cancel()
    assert placement.node == "n1"


async def test_a_burst_of_decisions_against_a_full_fleet_reads_the_fleet_once(
    writer: GroupWriter, scheduler: HubScheduler, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler_module, "FRESH_FOR", 0.0)  # every failure looks again
    await writer.run(ready_node, "n1", capacity=1)
    await writer.run(bound_task, "n1")  # full
    sids = [await writer.run(pending_task) for _ in range(20)]
    await scheduler.resync()
    before = scheduler.resyncs
    outcomes = await asyncio.gather(
        *(scheduler.schedule(request_for(sid)) for sid in sids), return_exceptions=True
    )
    assert all(isinstance(outcome, SchedulingError) for outcome in outcomes)
    # All twenty looked at the database again before failing: through one shared read.
    assert scheduler.resyncs - before == 1


async def test_a_change_announced_during_a_resync_gets_a_read_of_its_own(
    writer: GroupWriter, scheduler: HubScheduler
) -> None:
    await scheduler.resync()  # an empty fleet
    first = asyncio.ensure_future(scheduler.resync())
    await asyncio.sleep(0)  # its read is queued
    await writer.run(ready_node, "n1")
    scheduler.wake()  # announced after the first read was queued
    await scheduler.resync()
    await first
    assert scheduler.cluster.node("n1") is not None
    assert scheduler.resyncs == 3
