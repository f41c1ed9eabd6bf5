"""ClusterScheduler: the pure ClusterState behind the async Scheduler protocol."""

from __future__ import annotations

from executor_core.scheduling.cluster import ClusterState
from executor_core.scheduling.types import Placement, ScheduleRequest, SchedulingError


class ClusterScheduler:
    """Schedules against an in-memory ClusterState (embedded use, tests, benchmarks).

    Nothing here awaits: the methods are async only to satisfy the Scheduler protocol.
    """

    def __init__(self, state: ClusterState | None = None) -> None:
        self.state = state if state is not None else ClusterState()

    async def schedule(self, request: ScheduleRequest) -> Placement:
        return self.state.place(request)

    async def estimate(self, request: ScheduleRequest) -> float | None:
        """Load fraction (running / capacity) of the node ``schedule`` would pick, or None."""
        try:
            placement = self.state.evaluate(request)
        except SchedulingError:
            return None
        info = self.state.node(placement.node)
        return info.load if info is not None else None

    def release(self, session_id: str) -> bool:
        return self.state.release(session_id)
