"""Node selector: every ``key=value`` of the request must be among the node's labels."""

from __future__ import annotations

from collections.abc import Mapping

from executor_core.scheduling.types import NodeView, ScheduleRequest

NAME = "NodeSelector"
REASON = "did not match selector {selector}"


def matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """True when ``selector`` ⊆ ``labels`` (an empty selector matches every node)."""
    # A plain loop, not all(...): this runs in the scheduler's hot loop, and a generator costs
    # more than the comparisons. .get() gives None for a missing key, never equal to a value.
    for key, value in selector.items():  # noqa: SIM110
        if labels.get(key) != value:
            return False
    return True


def describe(selector: Mapping[str, str]) -> str:
    """``k=v,k2=v2`` in key order, as operators write selectors."""
    return ",".join(f"{k}={selector[k]}" for k in sorted(selector))


def reason(selector: Mapping[str, str]) -> str:
    return REASON.format(selector=describe(selector))


class Selector:
    name = NAME

    def filter(self, node: NodeView, request: ScheduleRequest) -> str | None:
        if matches(request.node_selector, node.labels):
            return None
        return reason(request.node_selector)
