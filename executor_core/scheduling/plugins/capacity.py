"""Capacity: a node takes another task only while it runs fewer than its capacity."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from executor_core.scheduling.plugins.base import Filter, Narrow, Rejected, reject
from executor_core.scheduling.types import ScheduleRequest

NAME = "NodeCapacity"
REASON = "at capacity"


def _narrow(nodes: list[Any], rejected: Rejected) -> list[Any]:
    kept = [n for n in nodes if n.running < n.capacity]
    reject(rejected, REASON, nodes, kept)
    return kept


class Capacity(Filter):
    name = NAME
    transient = True  # a run ends, or the capacity grows

    def request_key(self, request: ScheduleRequest) -> Hashable:
        return ()

    def prefilter(self, request: ScheduleRequest) -> Narrow:
        return _narrow
