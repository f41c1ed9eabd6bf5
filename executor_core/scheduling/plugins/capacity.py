"""Capacity: a node takes another task only while it runs fewer than its capacity."""

from __future__ import annotations

from executor_core.scheduling.types import NodeView, ScheduleRequest

NAME = "NodeCapacity"
REASON = "at capacity"


def has_room(running: int, capacity: int) -> bool:
    return running < capacity


class Capacity:
    name = NAME

    def filter(self, node: NodeView, request: ScheduleRequest) -> str | None:
        return None if has_room(node.running, node.capacity) else REASON
