"""The scheduler framework, after kube-scheduler's: filter and score plugins behind two tiny
protocols, a registry of plugin factories, and profiles naming which plugins decide.

A filter rules a node out with a short reason phrase ("at capacity") or lets it through; a
score is normalised to 0-100, higher is better. Plugins work on lists of nodes (see
``plugins/base.py``), so a decision runs each of them once over the candidates instead of
once per node.

A ``Profile`` lists the filters, in the order a node's rejection is explained (each node is
counted once, under the first filter that rules it out), and the score plugins with their
weights. ``Framework`` is a profile built from a registry; for each request it gives the
filters and scores that apply (``cycle``). Adding a plugin is one module in ``plugins/`` and
its name in a profile (and in ``default_registry``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from executor_core.scheduling.plugins import (
    affinity,
    agents,
    capabilities,
    capacity,
    exclusion,
    models,
    pinning,
    preference,
    readiness,
    resources,
    selector,
)
from executor_core.scheduling.plugins.base import Narrow, Rate, Rejected, narrow_out
from executor_core.scheduling.types import NodeView, ScheduleRequest


@runtime_checkable
class FilterPlugin(Protocol):
    name: str
    # True when a node it rules out may pass later for the same request (waiting may help).
    transient: bool

    def prefilter(self, request: ScheduleRequest) -> Narrow | None:
        """The batch filter for this request, or None when the plugin does not constrain it."""
        ...

    def filter(self, node: NodeView, request: ScheduleRequest) -> str | None:
        """A reason phrase when the node is ruled out for the request, else None."""
        ...


@runtime_checkable
class ScorePlugin(Protocol):
    name: str

    def prescore(self, request: ScheduleRequest) -> Rate | None:
        """The batch scorer for this request, or None when the plugin has nothing to say."""
        ...

    def score(self, node: NodeView, request: ScheduleRequest) -> float:
        """How well the node suits the request, 0 (worst) to 100 (best)."""
        ...


Plugin = FilterPlugin | ScorePlugin
PluginFactory = Callable[[], Plugin]

# Pinning, selector and affinity come first because the cluster applies them through indexes
# (the node by name, label postings, the team's nodes) before it looks at a node at all.
DEFAULT_FILTERS: tuple[str, ...] = (
    pinning.NAME,
    selector.NAME,
    affinity.NAME,
    readiness.NAME,
    agents.NAME,
    capabilities.NAME,
    models.NAME,
    exclusion.NAME,
    capacity.NAME,
    resources.NAME,
)
DEFAULT_WEIGHTS: Mapping[str, float] = {
    affinity.NAME: 1.0,
    preference.NAME: 1.0,
    resources.NAME: 1.0,
}
DEFAULT_SCORES: tuple[str, ...] = tuple(DEFAULT_WEIGHTS)

ERR_PROFILE_SHAPE = "scheduler profile must be an object with 'filters' (a list) and 'scores'"
ERR_PROFILE_FILTERS = "scheduler profile 'filters' must be a list of plugin names"
ERR_PROFILE_SCORES = "scheduler profile 'scores' must map plugin names to weights"
ERR_PROFILE_WEIGHT = "scheduler profile: weight of {name!r} must be a number > 0"
ERR_PROFILE_DUPLICATE = "scheduler profile lists filter {name!r} twice"
ERR_PROFILE_NO_SCORES = "scheduler profile needs at least one score plugin"


@dataclass(frozen=True)
class Profile:
    """Which plugins decide: filters in explanation order, score plugins → weight."""

    filters: tuple[str, ...] = DEFAULT_FILTERS
    scores: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))

    @classmethod
    def from_dict(cls, data: object) -> Profile:
        """A profile from its JSON form, ``{"filters": [...], "scores": {"name": weight}}``.

        Either key may be left out to keep the default. Raises ValueError saying what is wrong
        (unknown names are caught when the profile is built into a Framework).
        """
        if not isinstance(data, Mapping) or set(data) - {"filters", "scores"}:
            raise ValueError(ERR_PROFILE_SHAPE)
        filters = data.get("filters", list(DEFAULT_FILTERS))
        if not isinstance(filters, list) or not all(isinstance(f, str) for f in filters):
            raise ValueError(ERR_PROFILE_FILTERS)
        scores = data.get("scores", dict(DEFAULT_WEIGHTS))
        if not isinstance(scores, Mapping) or not all(isinstance(s, str) for s in scores):
            raise ValueError(ERR_PROFILE_SCORES)
        return cls(filters=tuple(filters), scores=dict(scores))

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for name in self.filters:
            if name in seen:
                raise ValueError(ERR_PROFILE_DUPLICATE.format(name=name))
            seen.add(name)
        if not self.scores:
            raise ValueError(ERR_PROFILE_NO_SCORES)
        for name, weight in self.scores.items():
            number = isinstance(weight, int | float) and not isinstance(weight, bool)
            if not number or not weight > 0 or weight == float("inf"):
                raise ValueError(ERR_PROFILE_WEIGHT.format(name=name))


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
            known = ", ".join(self.names())
            raise LookupError(f"no scheduler plugin named {name!r} (known: {known})") from None
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
            pinning.NAME: pinning.NodeName,
            readiness.NAME: readiness.Readiness,
            selector.NAME: selector.Selector,
            agents.NAME: agents.Agents,
            capabilities.NAME: capabilities.Capabilities,
            models.NAME: models.Models,
            capacity.NAME: capacity.Capacity,
            exclusion.NAME: exclusion.Exclusion,
            resources.NAME: resources.Resources,
            affinity.NAME: affinity.TeamAffinity,
            preference.NAME: preference.PreferLabels,
        }
    )


class Cycle:
    """The plugins taking part in one decision.

    ``key``: what the applicable indexed filters read of the request (the cluster keeps the
    nodes they let through per key); ``walk``: the batch filters of the others, in profile
    order; ``rates``: (name, weight share, batch scorer), the shares summing to 1 so the total
    stays on the 0-100 scale (a static scorer's as the framework's ``remember`` wrapped it);
    ``statics``: for each of them, (name, score key) when the scorer is static, else None;
    ``lead``: (names, reason) of the walk's first filters as far as each rules out a few
    named nodes (``ruled_out`` in plugins/base.py), so the cluster can find those nodes by
    name: ``walk`` starts with their batch filters.
    The indexed filters themselves are built only when asked for (``indexed``, ``narrows``):
    a decision whose key is known does not need them.
    """

    __slots__ = ("_filters", "_indexed", "key", "lead", "rates", "request", "statics", "walk")

    def __init__(
        self,
        request: ScheduleRequest,
        filters: Sequence[FilterPlugin],
        key: tuple[Hashable, ...],
        indexed: Sequence[FilterPlugin],
        walk: list[Narrow],
        rates: tuple[tuple[str, float, Rate], ...],
        statics: tuple[Hashable | None, ...] = (),
        lead: tuple[tuple[Collection[str], str], ...] = (),
    ) -> None:
        self.request = request
        self._filters = filters
        self._indexed = indexed
        self.key = key
        self.walk = walk
        self.rates = rates
        self.statics = statics
        self.lead = lead

    @property
    def indexed(self) -> list[Narrow]:
        """The applicable indexed filters, in profile order."""
        return _prefilters(self._indexed, self.request)

    @property
    def narrows(self) -> list[Narrow]:
        """Every applicable filter, in profile order (to count each node's first reason)."""
        return _prefilters(self._filters, self.request)


def _prefilters(plugins: Iterable[FilterPlugin], request: ScheduleRequest) -> list[Narrow]:
    found = []
    for plugin in plugins:
        narrow = plugin.prefilter(request)
        if narrow is not None:
            found.append(narrow)
    return found


class Framework:
    """A profile built from a registry: the plugins that decide, ready for each request."""

    def __init__(
        self,
        profile: Profile | None = None,
        registry: Registry | None = None,
        *,
        remember: Callable[[Rate], Rate] | None = None,
    ) -> None:
        """``remember`` wraps a static scorer's batch scorer once per score key (the cluster
        keeps each node's scores under it); without it, the batch scorer itself is used."""
        self.profile = profile if profile is not None else Profile()
        registry = registry if registry is not None else default_registry()
        self.filters: tuple[FilterPlugin, ...] = tuple(registry.filters(self.profile.filters))
        self.static: tuple[FilterPlugin, ...] = tuple(f for f in self.filters if not f.transient)
        self._indexed = tuple(f for f in self.filters if getattr(f, "indexed", False))
        self._walked = tuple(f for f in self.filters if not getattr(f, "indexed", False))
        scores = registry.scores(self.profile.scores)
        self.scores: tuple[tuple[ScorePlugin, float], ...] = tuple(
            (plugin, float(self.profile.scores[plugin.name])) for plugin in scores
        )
        self.names = frozenset(self.profile.filters)
        self._filter_keys = _request_keys(self.filters)
        self._static_keys = _request_keys(self.static)
        self._static_at = tuple(i for i, f in enumerate(self.filters) if not f.transient)
        # What a cycle calls, looked up once rather than on every decision.
        self._keys = tuple(
            (plugin, plugin.name, plugin.index_key)  # type: ignore[attr-defined]
            for plugin in self._indexed
        )
        self._prefilters = tuple(
            (plugin.prefilter, getattr(plugin, "ruled_out", None)) for plugin in self._walked
        )
        self._scorers = tuple(
            (
                plugin.name,
                weight,
                plugin.prescore,
                plugin.score_key if getattr(plugin, "static", False) else None,  # type: ignore[attr-defined]
            )
            for plugin, weight in self.scores
        )
        # The shares when every scorer applies (the usual case), as _shares computes them.
        self._all_shares = _shares([weight for _plugin, weight in self.scores])
        # A static scorer's batch scorer depends on its score key alone (see plugins/base.py),
        # so it is built (and wrapped) once per key: (name, score key) -> Rate, or None when
        # the scorer has nothing to say.
        self._static_rates: dict[Hashable, Rate | None] = {}
        self._remember = remember

    def cycle(self, request: ScheduleRequest) -> Cycle:
        key: list[Hashable] = []
        indexed: list[FilterPlugin] = []
        for plugin, name, index_key in self._keys:
            part = index_key(request)
            if part is not None:
                key.append((name, part))
                indexed.append(plugin)
        walk: list[Narrow] = []
        lead: list[tuple[Collection[str], str]] = []
        for prefilter, ruled_out in self._prefilters:
            ruled = ruled_out(request) if ruled_out is not None else None
            if ruled is not None:
                narrow: Narrow | None = narrow_out(*ruled)
                if len(lead) == len(walk) and len(ruled[0]) <= _LEAD_NAMES:
                    lead.append(ruled)
            else:
                narrow = prefilter(request)
            if narrow is not None:
                walk.append(narrow)
        names: list[str] = []
        weights: list[float] = []
        found: list[Rate] = []
        statics: list[Hashable | None] = []
        static_rates = self._static_rates
        for name, weight, prescore, score_key in self._scorers:
            if score_key is None:
                static = None
                rate = prescore(request)
            else:
                static = (name, score_key(request))
                rate = static_rates.get(static, _UNKNOWN)
                if rate is _UNKNOWN:
                    rate = prescore(request)
                    if rate is not None and self._remember is not None:
                        rate = self._remember(rate)
                    if len(static_rates) >= _STATIC_KEYS:
                        static_rates.clear()  # request shapes churn: start over
                    static_rates[static] = rate
            if rate is not None:
                names.append(name)
                weights.append(weight)
                found.append(rate)
                statics.append(static)
        shares = self._all_shares if len(found) == len(self._scorers) else _shares(weights)
        rates = tuple(zip(names, shares, found, strict=True))
        return Cycle(
            request, self.filters, tuple(key), indexed, walk, rates, tuple(statics), tuple(lead)
        )

    def static_narrows(self, request: ScheduleRequest) -> list[Narrow]:
        """The batch filters of the request's static constraints (what waiting cannot change)."""
        return _prefilters(self.static, request)

    def filter_key(self, request: ScheduleRequest) -> tuple[Hashable, ...] | None:
        """Everything of the request the filters read (see ``request_key`` in plugins/base.py):
        two requests with the same key are judged alike on every node. None when a filter
        of the profile does not say."""
        keys = self._filter_keys
        return None if keys is None else tuple([key(request) for key in keys])

    def static_key(
        self, request: ScheduleRequest, filter_key: tuple[Hashable, ...] | None = None
    ) -> tuple[Hashable, ...] | None:
        """``filter_key`` of the static filters alone: what could-ever-fit depends on (taken
        from the request's ``filter_key`` when given)."""
        if filter_key is not None:
            return tuple([filter_key[i] for i in self._static_at])
        keys = self._static_keys
        return None if keys is None else tuple([key(request) for key in keys])


def _request_keys(filters: Sequence[FilterPlugin]) -> tuple[Callable[[Any], Hashable], ...] | None:
    keys = [getattr(plugin, "request_key", None) for plugin in filters]
    return None if None in keys else tuple(keys)  # type: ignore[arg-type]


def _shares(weights: Sequence[float]) -> tuple[float, ...]:
    """Each applicable scorer's share of their weights: the shares sum to 1, so the weighted
    sum stays on the 0-100 scale."""
    total = sum(weights)
    return tuple(weight / total for weight in weights)


# A filter ruling out more names than this is run as a batch filter like any other: looking
# each name up costs more than reading the visited nodes' names.
_LEAD_NAMES = 32
# How many (static scorer, score key) pairs keep their batch scorer at once.
_STATIC_KEYS = 256
# Not yet built (None is a built answer: the scorer has nothing to say).
_UNKNOWN: Any = object()


def narrow_all(narrows: Iterable[Narrow], nodes: list[Any], rejected: Rejected) -> list[Any]:
    """The nodes every filter lets through; the others counted under their first reason."""
    for narrow in narrows:
        if not nodes:
            break
        nodes = narrow(nodes, rejected)
    return nodes


def rate_all(
    rates: Sequence[tuple[str, float, Rate]], nodes: Sequence[Any]
) -> tuple[list[float], list[list[float]]]:
    """Each node's total (the weighted sum) and every scorer's own scores (unweighted)."""
    if not rates:
        return [0.0] * len(nodes), []
    each = [rate(nodes) for _name, _share, rate in rates]
    if len(rates) == 1:
        return each[0], each  # the only share is exactly 1.0
    shares = [share for _name, share, _rate in rates]
    if len(rates) == 2:
        a, b = shares
        return [x * a + y * b for x, y in zip(*each, strict=True)], each
    if len(rates) == 3:
        a, b, c = shares
        return [x * a + y * b + z * c for x, y, z in zip(*each, strict=True)], each
    totals = [0.0] * len(nodes)
    for share, scores in zip(shares, each, strict=True):
        totals = [t + s * share for t, s in zip(totals, scores, strict=True)]
    return totals, each


# -- per node: explanations and reference checks ---------------------------------------------


def run_filters(
    filters: Sequence[FilterPlugin], node: NodeView, request: ScheduleRequest
) -> str | None:
    """The first reason a filter gives to rule the node out, or None when all let it through."""
    for plugin in filters:
        why = plugin.filter(node, request)
        if why is not None:
            return why
    return None


def run_scores(
    scores: Sequence[ScorePlugin],
    node: NodeView,
    request: ScheduleRequest,
    weights: Mapping[str, float] | None = None,
) -> float:
    """The weighted mean of the plugins' scores (equal weights by default), on 0-100."""
    if not scores:
        return 0.0
    weight = [1.0 if weights is None else weights[p.name] for p in scores]
    total = sum(
        w * min(100.0, max(0.0, p.score(node, request)))
        for p, w in zip(scores, weight, strict=True)
    )
    return total / sum(weight)


def count_reasons(
    filters: Sequence[FilterPlugin], nodes: Iterable[NodeView], request: ScheduleRequest
) -> tuple[Counter[str], int]:
    """Reason phrase → how many nodes it ruled out first, and how many nodes passed."""
    rejected: Rejected = {}
    passed = narrow_all(_prefilters(filters, request), list(nodes), rejected)
    return Counter(rejected), len(passed)


def summarize(total: int, counts: Mapping[str, int], available: int = 0) -> str:
    """``0/12 nodes available: 7 did not match selector gpu=true, 3 at capacity, 2 not ready``.

    Reasons go most frequent first, then alphabetically, so the text is stable.
    """
    head = f"{available}/{total} nodes available"
    if total == 0:
        return f"{head}: no nodes registered"
    parts = [f"{n} {why}" for why, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n]
    return f"{head}: {', '.join(parts)}" if parts else head
