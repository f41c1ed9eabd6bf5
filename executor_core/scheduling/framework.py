"""The scheduler framework, after kube-scheduler's: filter and score plugins behind two tiny
protocols, a registry of plugin factories, and helpers to run them and explain a failure.

A filter rules a node out with a short reason phrase ("at capacity") or lets it through with
None. A score is normalised to 0-100, higher is better. The cluster's hot loop calls the same
pure functions the plugins are built from; the plugins themselves run where a per-node
object walk is affordable: explaining why nothing fits, and reference checks in tests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from executor_core.scheduling.plugins import (
    affinity,
    agents,
    capacity,
    exclusion,
    readiness,
    selector,
)
from executor_core.scheduling.types import NodeView, ScheduleRequest


@runtime_checkable
class FilterPlugin(Protocol):
    name: str

    def filter(self, node: NodeView, request: ScheduleRequest) -> str | None:
        """A reason phrase when the node is ruled out for the request, else None."""
        ...


@runtime_checkable
class ScorePlugin(Protocol):
    name: str

    def score(self, node: NodeView, request: ScheduleRequest) -> float:
        """How well the node suits the request, 0 (worst) to 100 (best)."""
        ...


Plugin = FilterPlugin | ScorePlugin
PluginFactory = Callable[[], Plugin]

# The order matters only for explanations: each node is counted once, under the first filter
# that rules it out. Selector and affinity come first because the cluster applies them through
# indexes (label postings, the team's nodes) before it looks at a node at all.
DEFAULT_FILTERS: tuple[str, ...] = (
    selector.NAME,
    affinity.NAME,
    readiness.NAME,
    agents.NAME,
    exclusion.NAME,
    capacity.NAME,
)
DEFAULT_SCORES: tuple[str, ...] = (affinity.NAME,)


class Registry:
    """Plugin name → factory, so a profile is a list of names."""

    def __init__(self, factories: Mapping[str, PluginFactory] | None = None) -> None:
        self._factories: dict[str, PluginFactory] = dict(factories or {})

    def register(self, name: str, factory: PluginFactory) -> None:
        if name in self._factories:
            raise ValueError(f"plugin {name!r} is already registered")
        self._factories[name] = factory

    def names(self) -> list[str]:
        return sorted(self._factories)

    def build(self, name: str) -> Plugin:
        try:
            factory = self._factories[name]
        except KeyError:
            raise LookupError(f"no scheduler plugin named {name!r}") from None
        return factory()

    def filters(self, names: Iterable[str] = DEFAULT_FILTERS) -> list[FilterPlugin]:
        built: list[FilterPlugin] = []
        for name in names:
            plugin = self.build(name)
            if not isinstance(plugin, FilterPlugin):
                raise TypeError(f"plugin {name!r} is not a filter")
            built.append(plugin)
        return built

    def scores(self, names: Iterable[str] = DEFAULT_SCORES) -> list[ScorePlugin]:
        built: list[ScorePlugin] = []
        for name in names:
            plugin = self.build(name)
            if not isinstance(plugin, ScorePlugin):
                raise TypeError(f"plugin {name!r} is not a scorer")
            built.append(plugin)
        return built


def default_registry() -> Registry:
    return Registry(
        {
            readiness.NAME: readiness.Readiness,
            selector.NAME: selector.Selector,
            agents.NAME: agents.Agents,
            capacity.NAME: capacity.Capacity,
            exclusion.NAME: exclusion.Exclusion,
            affinity.NAME: affinity.TeamAffinity,
        }
    )


def run_filters(
    filters: Sequence[FilterPlugin], node: NodeView, request: ScheduleRequest
) -> str | None:
    """The first reason a filter gives to rule the node out, or None when all let it through."""
    for plugin in filters:
        why = plugin.filter(node, request)
        if why is not None:
            return why
    return None


def run_scores(scores: Sequence[ScorePlugin], node: NodeView, request: ScheduleRequest) -> float:
    """The mean of the plugins' scores, so the total stays on the 0-100 scale."""
    if not scores:
        return 0.0
    total = sum(min(100.0, max(0.0, p.score(node, request))) for p in scores)
    return total / len(scores)


def count_reasons(
    filters: Sequence[FilterPlugin], nodes: Iterable[NodeView], request: ScheduleRequest
) -> tuple[Counter[str], int]:
    """Reason phrase → how many nodes it ruled out first, and how many nodes passed."""
    counts: Counter[str] = Counter()
    passed = 0
    for node in nodes:
        why = run_filters(filters, node, request)
        if why is None:
            passed += 1
        else:
            counts[why] += 1
    return counts, passed


def summarize(total: int, counts: Mapping[str, int], available: int = 0) -> str:
    """``0/12 nodes available: 7 did not match selector gpu=true, 3 at capacity, 2 not ready``.

    Reasons go most frequent first, then alphabetically, so the text is stable.
    """
    head = f"{available}/{total} nodes available"
    if total == 0:
        return f"{head}: no nodes registered"
    parts = [f"{n} {why}" for why, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n]
    return f"{head}: {', '.join(parts)}" if parts else head
