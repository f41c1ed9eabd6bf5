"""Readiness: only a ready node that is not cordoned (or draining) takes new work."""

from __future__ import annotations

from executor_core.scheduling.types import NodeView, ScheduleRequest

NAME = "NodeReadiness"
REASON_NOT_READY = "not ready"
# The hub maps draining onto cordoned: both stop new placements and keep running work.
REASON_CORDONED = "cordoned"


def unschedulable_reason(ready: bool, cordoned: bool) -> str | None:
    """Why a node in this state takes no new work, or None when it does."""
    if not ready:
        return REASON_NOT_READY
    if cordoned:
        return REASON_CORDONED
    return None


class Readiness:
    name = NAME

    def filter(self, node: NodeView, request: ScheduleRequest) -> str | None:
        return unschedulable_reason(node.ready, node.cordoned)
