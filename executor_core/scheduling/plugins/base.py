"""What every plugin is built on: a rule is written once, as a batch function over nodes.

A filter plugin's ``prefilter(request)`` returns a ``Narrow``, the nodes that pass of a list
(order kept), counting the others under their reason phrase; or None when the plugin does not
constrain this request at all (no selector, no capabilities asked...), so it costs nothing.
A score plugin's ``prescore(request)`` returns a ``Rate``, one 0-100 score per node; or None
when it has nothing to say about this request (it then takes no part in the total).

Working on lists lets the rule be one list comprehension, the fastest loop Python has; the
per-node ``filter`` and ``score`` (explanations, tests) run the same function on one node.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence, Set
from typing import Any, ClassVar

from executor_core.scheduling.types import NodeView, ScheduleRequest

# Reason phrase → nodes ruled out for it.
Rejected = dict[str, int]
Narrow = Callable[[list[Any], Rejected], list[Any]]
Rate = Callable[[Sequence[Any]], list[float]]


def reject(rejected: Rejected, reason: str, before: Sequence[Any], kept: Sequence[Any]) -> None:
    """Count the nodes of ``before`` that did not make it into ``kept`` under ``reason``."""
    dropped = len(before) - len(kept)
    if dropped:
        rejected[reason] = rejected.get(reason, 0) + dropped


def narrow_out(names: Set[str], reason: str) -> Narrow:
    """The batch filter ruling out the nodes named in ``names`` under ``reason``."""

    def narrow(nodes: list[Any], rejected: Rejected) -> list[Any]:
        kept = [n for n in nodes if n.name not in names]
        reject(rejected, reason, nodes, kept)
        return kept

    return narrow


class Filter:
    """Base of filter plugins. ``transient`` says whether a node it rules out may pass later
    without the request changing (a slot frees, a node becomes ready): then waiting helps."""

    name: ClassVar[str]
    transient: ClassVar[bool]
    # An indexed filter's verdict depends only on the facts a node changes through upsert
    # (labels, agents, capabilities, models, ready, cordoned) and on ``index_key(request)``:
    # the cluster keeps the nodes it lets through per key and walks only those.
    indexed: ClassVar[bool] = False

    # A filter may also define ``request_key(request)``: everything of the request its verdict
    # reads, which it otherwise bases only on the node (its facts and running count). Two
    # requests with the same key are judged alike on every node, so while the fleet does not
    # change, the cluster answers a failure, and whether waiting could help, from the last
    # request of that key. A profile with a filter lacking it is never answered so. A static
    # filter (not transient) reads nothing of a node that load or a heartbeat changes
    # (running, CPU, memory, disk): whether waiting could help is kept across those.

    # A filter whose verdict reads nothing of a node but its name may also define
    # ``ruled_out(request)``: (the names it rules out, the reason), or None when it cannot say
    # so for this request (its ``prefilter`` then decides, and may be None). The cluster then
    # looks those names up in its rings instead of reading the name of every node it visits.

    def prefilter(self, request: ScheduleRequest) -> Narrow | None:
        raise NotImplementedError

    def index_key(self, request: ScheduleRequest) -> Hashable | None:
        """What of the request an indexed filter's verdict depends on; None exactly when
        ``prefilter`` gives None (the plugin does not constrain the request)."""
        raise NotImplementedError

    def filter(self, node: NodeView, request: ScheduleRequest) -> str | None:
        """The reason phrase when the node is ruled out for the request, else None."""
        narrow = self.prefilter(request)
        if narrow is None:
            return None
        rejected: Rejected = {}
        if narrow([node], rejected):
            return None
        return next(iter(rejected))


class Score:
    """Base of score plugins."""

    name: ClassVar[str]
    # A static scorer rates each node on its own, from the facts a node changes only through
    # upsert (labels, capabilities, heartbeat figures...), never from placements, and from
    # ``score_key(request)``: the cluster remembers a node's score per key until the node is
    # upserted again, so it is not computed on every decision.
    static: ClassVar[bool] = False

    def prescore(self, request: ScheduleRequest) -> Rate | None:
        raise NotImplementedError

    def score_key(self, request: ScheduleRequest) -> Hashable:
        """What of the request a static scorer's scores depend on."""
        raise NotImplementedError

    def score(self, node: NodeView, request: ScheduleRequest) -> float:
        """How well the node suits the request, 0 (worst) to 100 (best); 0 when not asked."""
        rate = self.prescore(request)
        return rate([node])[0] if rate is not None else 0.0
