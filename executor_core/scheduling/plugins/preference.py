"""Preferred labels: soft, never a filter. Each of the request's ``prefer_labels`` the node
carries raises its score: 100 * matched / asked."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from executor_core.scheduling.plugins.base import Rate, Score
from executor_core.scheduling.types import ScheduleRequest

NAME = "PreferLabels"


class PreferLabels(Score):
    name = NAME
    static = True  # labels change only through upsert

    def score_key(self, request: ScheduleRequest) -> Hashable:
        return frozenset(request.prefer_labels.items())

    def prescore(self, request: ScheduleRequest) -> Rate | None:
        preferred = dict(request.prefer_labels)
        if not preferred:
            return None
        if len(preferred) == 1:
            ((key, value),) = preferred.items()

            def one(nodes: Any) -> list[float]:
                return [100.0 if n.labels.get(key) == value else 0.0 for n in nodes]

            return one
        if len(preferred) == 2:
            ((key1, value1), (key2, value2)) = preferred.items()

            def two(nodes: Any) -> list[float]:
                return [
                    100.0
                    * (((lab := n.labels).get(key1) == value1) + (lab.get(key2) == value2))
                    / 2
                    for n in nodes
                ]

            return two
        asked = len(preferred)
        pairs = tuple(preferred.items())

        def many(nodes: Any) -> list[float]:
            # One comprehension per pair: cheaper than a call per node.
            hits = [0] * len(nodes)
            for key, value in pairs:
                hits = [h + (n.labels.get(key) == value) for h, n in zip(hits, nodes, strict=True)]
            return [100.0 * h / asked for h in hits]

        return many
