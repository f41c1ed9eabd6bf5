"""Capabilities: the node must advertise every capability the request asks for
(``hivemind-node --capabilities browser,gpu_inference``)."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from executor_core.scheduling.plugins.base import Filter, Narrow, Rejected, reject
from executor_core.scheduling.types import ScheduleRequest

NAME = "NodeCapabilities"
REASON = "missing capabilities {capabilities}"


def reason(wanted: frozenset[str]) -> str:
    return REASON.format(capabilities=",".join(sorted(wanted)))


class Capabilities(Filter):
    name = NAME
    transient = False
    indexed = True

    def index_key(self, request: ScheduleRequest) -> Hashable:
        return frozenset(request.capabilities) or None

    request_key = index_key

    def prefilter(self, request: ScheduleRequest) -> Narrow | None:
        wanted = frozenset(request.capabilities)
        if not wanted:
            return None
        why = reason(wanted)

        def narrow(nodes: list[Any], rejected: Rejected) -> list[Any]:
            kept = [n for n in nodes if wanted <= n.capabilities]
            reject(rejected, why, nodes, kept)
            return kept

        return narrow
