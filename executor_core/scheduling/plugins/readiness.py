"""Readiness: only a ready node that is not cordoned (or draining) takes new work."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from executor_core.scheduling.plugins.base import Filter, Narrow, Rejected, reject
from executor_core.scheduling.types import ScheduleRequest

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


def _narrow(nodes: list[Any], rejected: Rejected) -> list[Any]:
    # unschedulable_reason in two passes, one per reason, so each drop is counted by length.
    ready = [n for n in nodes if n.ready]
    reject(rejected, REASON_NOT_READY, nodes, ready)
    kept = [n for n in ready if not n.cordoned]
    reject(rejected, REASON_CORDONED, ready, kept)
    return kept


class Readiness(Filter):
    name = NAME
    transient = True  # a node becomes ready, or is uncordoned
    indexed = True

    def prefilter(self, request: ScheduleRequest) -> Narrow:
        return _narrow

    def index_key(self, request: ScheduleRequest) -> Hashable:
        return ()

    request_key = index_key
