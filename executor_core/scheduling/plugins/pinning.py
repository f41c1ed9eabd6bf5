"""Node name: a request pinned to one node (the upstream direct mode) goes there or nowhere."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from executor_core.scheduling.plugins.base import Filter, Narrow, Rejected, reject
from executor_core.scheduling.types import ScheduleRequest

NAME = "NodeName"
REASON = "not the requested node {node}"
# Said of the pinned node itself when the cluster does not know it.
REASON_UNKNOWN = "is not registered"


class NodeName(Filter):
    name = NAME
    transient = False

    def request_key(self, request: ScheduleRequest) -> Hashable:
        return request.node or None

    def prefilter(self, request: ScheduleRequest) -> Narrow | None:
        pinned = request.node
        if not pinned:
            return None
        why = REASON.format(node=pinned)

        def narrow(nodes: list[Any], rejected: Rejected) -> list[Any]:
            kept = [n for n in nodes if n.name == pinned]
            reject(rejected, why, nodes, kept)
            return kept

        return narrow
