"""Exclusion: a retried request never returns to a node that already lost it."""

from __future__ import annotations

from collections.abc import Container

from executor_core.scheduling.types import NodeView, ScheduleRequest

NAME = "NodeExclusion"
REASON = "excluded after an earlier attempt"


def allows(node_name: str, excluded: Container[str]) -> bool:
    return node_name not in excluded


class Exclusion:
    name = NAME

    def filter(self, node: NodeView, request: ScheduleRequest) -> str | None:
        return None if allows(node.name, request.hints.excluded_nodes) else REASON
