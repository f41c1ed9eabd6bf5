"""Exclusion: a retried request never returns to a node that already lost it."""

from __future__ import annotations

from collections.abc import Hashable

from executor_core.scheduling.plugins.base import Filter, Narrow, narrow_out
from executor_core.scheduling.types import ScheduleRequest

NAME = "NodeExclusion"
REASON = "excluded after an earlier attempt"


class Exclusion(Filter):
    name = NAME
    # Static as waiting goes: an excluded node never becomes eligible for this request, so
    # a retry whose only candidates were excluded falls back at once instead of waiting.
    # Other nodes that are merely busy still make the request worth waiting for.
    transient = False

    def request_key(self, request: ScheduleRequest) -> Hashable:
        return frozenset(request.hints.excluded_nodes) or None

    def ruled_out(self, request: ScheduleRequest) -> tuple[frozenset[str], str] | None:
        excluded = request.hints.excluded_nodes
        return (excluded, REASON) if excluded else None

    def prefilter(self, request: ScheduleRequest) -> Narrow | None:
        ruled = self.ruled_out(request)
        return narrow_out(*ruled) if ruled is not None else None
