"""Model: a request naming a model goes only to a node that serves it."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from executor_core.scheduling.plugins.base import Filter, Narrow, Rejected, reject
from executor_core.scheduling.types import ScheduleRequest

NAME = "NodeModel"
REASON = "not serving model {model}"


class Models(Filter):
    name = NAME
    transient = False
    indexed = True

    def index_key(self, request: ScheduleRequest) -> Hashable:
        return request.model or None

    request_key = index_key

    def prefilter(self, request: ScheduleRequest) -> Narrow | None:
        model = request.model
        if not model:
            return None
        why = REASON.format(model=model)

        def narrow(nodes: list[Any], rejected: Rejected) -> list[Any]:
            kept = [n for n in nodes if model in n.models]
            reject(rejected, why, nodes, kept)
            return kept

        return narrow
