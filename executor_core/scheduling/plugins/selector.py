"""Node selector: every ``key=value`` of the request must be among the node's labels."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from executor_core.scheduling.plugins.base import Filter, Narrow, Rejected, reject
from executor_core.scheduling.types import ScheduleRequest

NAME = "NodeSelector"
REASON = "did not match selector {selector}"


def matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """True when ``selector`` ⊆ ``labels`` (an empty selector matches every node)."""
    # A plain loop, not all(...): a generator costs more than the comparisons.
    # .get() gives None for a missing key, never equal to a value.
    for key, value in selector.items():  # noqa: SIM110
        if labels.get(key) != value:
            return False
    return True


def describe(selector: Mapping[str, str]) -> str:
    """``k=v,k2=v2`` in key order, as operators write selectors."""
    return ",".join(f"{k}={selector[k]}" for k in sorted(selector))


def reason(selector: Mapping[str, str]) -> str:
    return REASON.format(selector=describe(selector))


def narrower(selector: Mapping[str, str]) -> Narrow | None:
    """The batch filter keeping the nodes whose labels include ``selector`` (None: all do)."""
    if not selector:
        return None
    if len(selector) == 1:
        ((key, value),) = selector.items()
        why = reason(selector)

        def narrow(nodes: list[Any], rejected: Rejected) -> list[Any]:
            kept = [n for n in nodes if n.labels.get(key) == value]
            reject(rejected, why, nodes, kept)
            return kept

        return narrow
    pairs = dict(selector)
    why_pairs = reason(pairs)

    def narrow_pairs(nodes: list[Any], rejected: Rejected) -> list[Any]:
        kept = [n for n in nodes if matches(pairs, n.labels)]
        reject(rejected, why_pairs, nodes, kept)
        return kept

    return narrow_pairs


class Selector(Filter):
    name = NAME
    transient = False  # labels change only when an operator relabels the node
    indexed = True

    def prefilter(self, request: ScheduleRequest) -> Narrow | None:
        return narrower(request.node_selector)

    def index_key(self, request: ScheduleRequest) -> Hashable:
        return frozenset(request.node_selector.items()) or None

    request_key = index_key
