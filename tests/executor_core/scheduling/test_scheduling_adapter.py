"""ClusterScheduler: the pure ClusterState behind the async Scheduler protocol."""

from __future__ import annotations

import pytest

from executor_core.scheduling import (
    ClusterScheduler,
    ClusterState,
    NodeInfo,
    ScheduleRequest,
    SchedulingError,
)


def scheduler() -> ClusterScheduler:
    return ClusterScheduler(
        ClusterState([NodeInfo("a", capacity=4, running=1), NodeInfo("b", capacity=4, running=3)])
    )


async def test_schedule_places_and_assumes_the_slot():
    sched = scheduler()
    placement = await sched.schedule(ScheduleRequest("s1", "coder"))
    assert placement.node == "a"
    assert sched.state.node("a").running == 2


async def test_estimate_is_the_load_of_the_node_it_would_pick_without_placing():
    sched = scheduler()
    assert await sched.estimate(ScheduleRequest("s1", "coder")) == 0.25
    assert sched.state.node("a").running == 1


async def test_estimate_is_none_when_no_node_fits():
    sched = scheduler()
    assert await sched.estimate(ScheduleRequest("s1", "coder", node_selector={"gpu": "x"})) is None


async def test_release_gives_the_slot_back():
    sched = scheduler()
    await sched.schedule(ScheduleRequest("s1", "coder"))
    assert sched.release("s1") is True
    assert sched.release("s1") is False
    assert sched.state.node("a").running == 1


async def test_schedule_raises_scheduling_error_with_the_reason():
    sched = ClusterScheduler()
    with pytest.raises(SchedulingError, match="no nodes registered"):
        await sched.schedule(ScheduleRequest("s1", "coder"))
