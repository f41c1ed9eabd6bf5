"""The pure scheduler: decide which Golem node runs a SubAgent (DESIGN §5)."""

from __future__ import annotations

from executor_core.scheduling.adapter import ClusterScheduler
from executor_core.scheduling.cluster import ClusterState
from executor_core.scheduling.types import (
    NodeInfo,
    NodeScore,
    NodeView,
    Placement,
    PlacementRecord,
    ScheduleHints,
    Scheduler,
    ScheduleRequest,
    SchedulingError,
)

__all__ = [
    "ClusterScheduler",
    "ClusterState",
    "NodeInfo",
    "NodeScore",
    "NodeView",
    "Placement",
    "PlacementRecord",
    "ScheduleHints",
    "ScheduleRequest",
    "Scheduler",
    "SchedulingError",
]
