"""ClusterState: the scheduler's in-memory snapshot of the fleet, its label index, and
place/release (the "assume" half of kube-scheduler's optimistic bind).

A decision costs what the nodes that can match cost, not what the fleet costs:

- Label index. Every ``(key, value)`` label maps to the nodes carrying it, kept sorted by name.
  A selector walks the smallest of its postings and checks its other pairs on each node it
  visits; the nodes outside that posting are never visited, yet they are counted in a failure's
  reason as not matching the selector (total - visited).
- ``require_colocate`` with the team already placed visits only the team's nodes.
- Sampling, as kube-scheduler's numFeasibleNodesToFind: filtering stops once
  ``feasible_nodes_to_find(candidates)`` feasible nodes were found (see the constants below),
  and the walk starts where the previous placement from the same posting stopped, so
  successive decisions look at different parts of the fleet. That offset is part of the state:
  the same contents and the same sequence of calls give the same nodes. ``evaluate`` never
  moves it, so ``evaluate`` followed by ``place`` (of a session not yet placed) picks the
  same node.

The decision itself is the profile's plugins (``framework.py``): the walk hands the sampled
candidates to the filters in chunks, the score plugins rate the feasible ones, and the best
wins (ties: fewest running, then name). Every decision, placed or not, carries a
PlacementRecord: nodes evaluated, feasible, rejected by reason, the best few candidates with
each plugin's share of their score (a placement's candidates are ranked when its record is
first read, from what the decision saw). A failure is remembered per filter key (what the
filters read of the request, ``Framework.filter_key``) until a node or a running count changes:
a queue of requests for a full fleet is answered without a walk, with the same reason and
counts. Whether waiting could help is remembered per static key until a node is added,
removed or changes what the static filters read. The index paths follow the profile: a
profile without NodeSelector (NodeName, TeamAffinity) does not narrow the candidates by it
either.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from executor_core.scheduling.framework import (
    Cycle,
    Framework,
    Profile,
    Registry,
    narrow_all,
    rate_all,
    summarize,
)
from executor_core.scheduling.plugins import affinity, pinning, selector
from executor_core.scheduling.plugins.base import Narrow, Rate, Rejected
from executor_core.scheduling.types import (
    RECORD_CANDIDATES,
    NodeInfo,
    NodeScore,
    Placement,
    PlacementRecord,
    ScheduleRequest,
    SchedulingError,
)
from executor_core.types import NodeAffinityPolicy, RequestValidationError

# How many feasible nodes a decision looks for before it stops filtering. Candidates up to
# MIN_FEASIBLE_NODES_TO_FIND are all examined (the choice is then the exact best). Past that,
# the target is an adaptive percentage of the candidates, BASE_PERCENTAGE / (1 + n /
# PERCENTAGE_HALVES_AT), never below the minimum: 50 nodes at 1,000 candidates, 66 at 2,000,
# 90 at 10,000, approaching 100 at most. kube-scheduler's own constants (at least 100 nodes,
# 50% shrinking with size) are sized for Go; in Python these keep a decision at tens of
# microseconds while still choosing the best of a large, rotating sample.
MIN_FEASIBLE_NODES_TO_FIND = 50
BASE_PERCENTAGE = 10.0
PERCENTAGE_HALVES_AT = 1000

ERR_NODE_NAME = "node name must be a non-empty string"
ERR_NODE_CAPACITY = "node {name}: capacity and running must be integers >= 0"
ERR_NODE_LABELS = "node {name}: labels must map strings to strings"
ERR_NODE_NAMES = "node {name}: {field} must be a set of strings"
ERR_NODE_FIGURE = "node {name}: {field} must be a number >= 0 or None"
ERR_STRINGS = "must be a set of strings"
ERR_LABELS = "must map strings to strings"
ERR_MEMORY = "must be an integer >= 0"
ERR_CPU = "must be a number from 0 to 100"
ERR_TEXT = "must be a string"
ERR_REQUIRES_TEAM = "{policy} requires a team"

ERR_UNKNOWN_POLICY = "unknown affinity policy {policy!r}"

_EMPTY: dict[str, str] = {}
_EMPTY_TEAM: dict[str, int] = {}
_ANY_AGENT: frozenset[str] = frozenset()


def feasible_nodes_to_find(candidates: int) -> int:
    """How many feasible nodes to find among ``candidates`` before choosing."""
    if candidates <= MIN_FEASIBLE_NODES_TO_FIND:
        return candidates
    percentage = BASE_PERCENTAGE / (1 + candidates / PERCENTAGE_HALVES_AT)
    return max(MIN_FEASIBLE_NODES_TO_FIND, int(candidates * percentage / 100))


class _Node:
    """A node's live record. It has NodeInfo's attributes, so plugins can read it directly."""

    __slots__ = (
        "agents",
        "capabilities",
        "capacity",
        "cordoned",
        "cpu_percent",
        "free_disk_mb",
        "free_memory_mb",
        "labels",
        "models",
        "name",
        "ready",
        "running",
        "scores",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        # Static scorers' scores of this node (token of the score key -> score); see _remember.
        self.scores: dict[object, float] = {}
        self.labels: dict[str, str] = {}
        self.capacity = 0
        self.running = 0
        self.ready = False
        self.cordoned = False
        self.agents: frozenset[str] = frozenset()
        self.capabilities: frozenset[str] = frozenset()
        self.models: frozenset[str] = frozenset()
        self.cpu_percent: float | None = None
        self.free_memory_mb: int | None = None
        self.free_disk_mb: int | None = None

    def update(self, info: NodeInfo) -> None:
        self.labels = dict(info.labels)
        self.capacity = info.capacity
        self.running = info.running
        self.ready = bool(info.ready)
        self.cordoned = bool(info.cordoned)
        # Unrestricted nodes share one empty set: the hot loop's agent check then reads one
        # object that stays in cache rather than one per node.
        self.agents = frozenset(info.agents) or _ANY_AGENT
        self.capabilities = frozenset(info.capabilities) or _ANY_AGENT
        self.models = frozenset(info.models) or _ANY_AGENT
        self.cpu_percent = info.cpu_percent
        self.free_memory_mb = info.free_memory_mb
        self.free_disk_mb = info.free_disk_mb
        self.scores = {}  # computed from the facts just replaced

    def indexed_facts(self) -> tuple[object, ...]:
        """What indexed filters may read (labels are compared by the caller)."""
        return (
            self.agents,
            self.capabilities,
            self.models,
            self.ready,
            self.cordoned,
            tuple(self.labels.items()),
        )

    def info(self) -> NodeInfo:
        return NodeInfo(
            name=self.name,
            labels=dict(self.labels),
            capacity=self.capacity,
            running=self.running,
            ready=self.ready,
            cordoned=self.cordoned,
            agents=self.agents,
            capabilities=self.capabilities,
            models=self.models,
            cpu_percent=self.cpu_percent,
            free_memory_mb=self.free_memory_mb,
            free_disk_mb=self.free_disk_mb,
        )


class _Ring:
    """Nodes sorted by name, with the offset the next placement starts from."""

    __slots__ = ("names", "nodes", "share", "start")

    def __init__(self, nodes: list[_Node] | None = None) -> None:
        """Empty, or of ``nodes`` already sorted by name."""
        self.nodes: list[_Node] = nodes if nodes is not None else []
        self.names: list[str] = [n.name for n in self.nodes]
        self.start = 0
        # The share of the nodes the last walk visited that it found feasible: only sizes the
        # walk's chunks (see _walk), never changes a decision.
        self.share = 1.0

    def add(self, node: _Node) -> None:
        i = bisect_left(self.names, node.name)
        self.names.insert(i, node.name)
        self.nodes.insert(i, node)
        if i < self.start:
            self.start += 1  # keep pointing at the same node

    def discard(self, name: str) -> None:
        i = bisect_left(self.names, name)
        if i < len(self.names) and self.names[i] == name:
            del self.names[i]
            del self.nodes[i]
            if i < self.start:
                self.start -= 1
            if self.start >= len(self.names):
                self.start = 0


# An assumed placement: (node, score, reason, team_id). A plain tuple of strings and a float,
# which the garbage collector stops tracking: tens of thousands of live placements then cost
# no time in full collections (a NamedTuple or a Placement kept here would).
_Assumed = tuple[str, float, str, "str | None"]
# A decision's scorers: (name, weight share, batch scorer), as Cycle.rates.
Rates = tuple[tuple[str, float, Rate], ...]


class _Failed(NamedTuple):
    """A failed decision, as it is raised again while nothing changes."""

    summary: str
    rejected: Rejected
    evaluated: int
    waitable: bool

    def error(self) -> SchedulingError:
        record = PlacementRecord(
            evaluated=self.evaluated,
            feasible=0,
            rejected=dict(self.rejected),  # the caller's own: the cache keeps this one
            candidates=(),
            chosen=None,
            summary=self.summary,
        )
        return SchedulingError(self.summary, record=record, waitable=self.waitable)


class _Decision(NamedTuple):
    node: _Node
    score: float
    ring: _Ring | None
    next_start: int
    placement: Placement


class ClusterState:
    """The fleet as the scheduler sees it. Every public method is thread-safe (one lock).

    ``place`` assumes its decision: the node's running count goes up at once and the session
    is remembered until ``release``. Placing a session that is already placed moves it: its
    slot is given back first (so a node full only because of it still qualifies), it is then
    counted once wherever the new decision lands, and if nothing fits the old placement is
    kept and SchedulingError raised: a failed call changes nothing.

    ``upsert_node`` takes the caller's facts as the truth, running count included; sessions
    assumed on the node stay remembered, and releasing one never takes running below zero.
    ``remove_node`` forgets the sessions assumed on the node.
    """

    def __init__(
        self,
        nodes: Iterable[NodeInfo] = (),
        *,
        profile: Profile | None = None,
        registry: Registry | None = None,
    ) -> None:
        """``profile`` names the plugins that decide (default: every built-in one); building
        it raises LookupError / TypeError for a name the registry does not have as such."""
        # A static scorer reads and keeps each node's scores (see _remember).
        self.framework = Framework(profile, registry, remember=_remember)
        names = self.framework.names
        self._pins = pinning.NAME in names
        self._selects = selector.NAME in names
        self._teams_only = affinity.NAME in names
        self._lock = threading.Lock()
        self._nodes: dict[str, _Node] = {}
        self._all = _Ring()
        self._index: dict[tuple[str, str], _Ring] = {}
        self._assumed: dict[str, _Assumed] = {}
        self._teams: dict[str, dict[str, int]] = {}
        # Per key of the indexed filters (Cycle.key): the nodes they let through, as a ring
        # with its own sampling offset. Any change of a node's indexed facts clears it all.
        self._eligible: dict[tuple[Hashable, ...], _Ring] = {}
        # Per key of a forgotten ring: the node its next walk was to start at, so the rebuilt
        # ring goes on from there rather than from the first name.
        self._resume: dict[tuple[Hashable, ...], str] = {}
        # Per filter key (Framework.filter_key): the failure of the last request of that key,
        # for as long as no node and no running count changes (a full fleet answers a queue
        # of requests alike). Any change clears it all.
        self._failures: dict[tuple[Hashable, ...], _Failed] = {}
        # Per static key (Framework.static_key): whether some node passes the static filters.
        # Load does not change that, only what the static filters read of a node: cleared
        # when a node is added or removed, or its indexed facts or capacity change.
        self._fits: dict[tuple[Hashable, ...], bool] = {}
        for info in nodes:
            self.upsert_node(info)

    # -- the fleet -------------------------------------------------------------------------

    def upsert_node(self, info: NodeInfo) -> None:
        """Add the node or replace what is known of it (labels, capacity, running, state)."""
        name = info.name
        if not isinstance(name, str) or not name:
            raise ValueError(ERR_NODE_NAME)
        for number in (info.capacity, info.running):
            if not isinstance(number, int) or isinstance(number, bool) or number < 0:
                raise ValueError(ERR_NODE_CAPACITY.format(name=name))
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in info.labels.items()):
            raise ValueError(ERR_NODE_LABELS.format(name=name))
        _check_node_extras(info)
        with self._lock:
            node = self._nodes.get(name)
            if node is None or node.info() != info:
                self._failures.clear()  # a heartbeat repeating itself changes no decision
            if node is None:
                node = self._nodes[name] = _Node(name)
                node.update(info)
                self._all.add(node)
                self._index_labels(node, node.labels.items())
                self._forget_eligible()
                self._fits.clear()
                return
            facts = node.indexed_facts()
            capacity = node.capacity
            if node.labels == info.labels:
                node.update(info)
            else:
                old = set(node.labels.items())
                node.update(info)
                new = set(node.labels.items())
                self._unindex_labels(name, old - new)
                self._index_labels(node, new - old)
            if node.indexed_facts() != facts:
                self._forget_eligible()
                self._fits.clear()
            elif node.capacity != capacity:
                self._fits.clear()

    def remove_node(self, name: str) -> bool:
        """Forget the node and the sessions assumed on it. False when it was unknown."""
        with self._lock:
            node = self._nodes.pop(name, None)
            if node is None:
                return False
            self._all.discard(name)
            self._unindex_labels(name, node.labels.items())
            self._forget_eligible()
            self._failures.clear()
            self._fits.clear()
            # A scan, not a per-node session set: removal is rare, placements are not.
            gone = [sid for sid, assumed in self._assumed.items() if assumed[0] == name]
            for session_id in gone:
                self._forget_team_member(self._assumed.pop(session_id)[3], name)
            return True

    def node(self, name: str) -> NodeInfo | None:
        with self._lock:
            node = self._nodes.get(name)
            return node.info() if node is not None else None

    def nodes(self) -> list[NodeInfo]:
        """Every node, by name."""
        with self._lock:
            return [node.info() for node in self._all.nodes]

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, name: object) -> bool:
        return name in self._nodes

    def matching_nodes(self, node_selector: Mapping[str, str]) -> list[str]:
        """Names of the nodes whose labels include ``node_selector``, by name (via the index)."""
        with self._lock:
            ring, rest = self._postings(node_selector)
            if ring is None:
                return []
            match = selector.matches
            return [n.name for n in ring.nodes if not rest or match(rest, n.labels)]

    # -- placements ------------------------------------------------------------------------

    def evaluate(self, request: ScheduleRequest) -> Placement:
        """The node ``place`` would choose now, without assuming it. Raises SchedulingError."""
        with self._lock:
            return self._decide(request).placement

    def place(self, request: ScheduleRequest) -> Placement:
        """Choose a node and assume the placement (see the class docstring)."""
        session_id = request.session_id
        with self._lock:
            previous = self._assumed.get(session_id)
            gave_back = self._unassume(session_id) if previous is not None else False
            try:
                decision = self._decide(request)
            except BaseException:
                if previous is not None:
                    self._assume(session_id, previous, count=gave_back)
                raise
            if decision.ring is not None:
                decision.ring.start = decision.next_start
            placement = decision.placement
            assumed = (placement.node, placement.score, placement.reason, request.team_id)
            self._assume(session_id, assumed, count=True)
            return placement

    def release(self, session_id: str) -> bool:
        """Give the session's slot back. False when the session was not placed (idempotent)."""
        with self._lock:
            if session_id not in self._assumed:
                return False
            self._unassume(session_id)
            return True

    def forget(self, session_id: str) -> bool:
        """Forget the session's placement without giving its slot back: the caller's next
        ``upsert_node`` already counts it as ended (it ended under another process)."""
        with self._lock:
            assumed = self._assumed.pop(session_id, None)
            if assumed is None:
                return False
            self._forget_team_member(assumed[3], assumed[0])
            return True

    def placement_of(self, session_id: str) -> Placement | None:
        with self._lock:
            assumed = self._assumed.get(session_id)
            if assumed is None:
                return None
            return Placement(node=assumed[0], score=assumed[1], reason=assumed[2])

    def team_nodes(self, team_id: str) -> dict[str, int]:
        """Node → sessions of the team placed here and not released (a ready team_nodes hint)."""
        with self._lock:
            return dict(self._teams.get(team_id, _EMPTY_TEAM))

    # -- internals (the lock is held) ------------------------------------------------------

    def _index_labels(self, node: _Node, pairs: Iterable[tuple[str, str]]) -> None:
        for pair in pairs:
            ring = self._index.get(pair)
            if ring is None:
                ring = self._index[pair] = _Ring()
            ring.add(node)

    def _unindex_labels(self, name: str, pairs: Iterable[tuple[str, str]]) -> None:
        for pair in pairs:
            ring = self._index.get(pair)
            if ring is not None:
                ring.discard(name)
                if not ring.names:
                    del self._index[pair]

    def _postings(self, node_selector: Mapping[str, str]) -> tuple[_Ring | None, Mapping[str, str]]:
        """The smallest posting of the selector and the pairs still to check on its nodes.

        None when some pair is on no node: nothing can match.
        """
        if not node_selector:
            return self._all, _EMPTY
        index = self._index
        best: _Ring | None = None
        best_key = ""
        for pair in node_selector.items():
            ring = index.get(pair)
            if ring is None:
                return None, _EMPTY
            if best is None or len(ring.names) < len(best.names):
                best, best_key = ring, pair[0]
        if len(node_selector) == 1:
            return best, _EMPTY
        return best, {k: v for k, v in node_selector.items() if k != best_key}

    def _decide(self, request: ScheduleRequest) -> _Decision:
        hints = request.hints
        policy = hints.affinity
        if policy.__class__ is not NodeAffinityPolicy:
            try:
                policy = NodeAffinityPolicy(policy)
            except ValueError:
                raise RequestValidationError(
                    "affinity_policy", ERR_UNKNOWN_POLICY.format(policy=policy)
                ) from None
        if policy in affinity.REQUIRES_TEAM and not request.team_id:
            raise RequestValidationError(
                "affinity_policy", ERR_REQUIRES_TEAM.format(policy=policy.value)
            )
        _check_constraints(request)
        key = None
        if self._failures:
            # Nothing changed since a request failed: one of the same key fails alike.
            key = self.framework.filter_key(request)
            failed = self._failures.get(key) if key is not None else None
            if failed is not None:
                raise failed.error()
        team = affinity.members(hints.team_nodes) if hints.team_nodes else _EMPTY_TEAM
        cycle = self.framework.cycle(request)

        pinned = request.node if self._pins else ""
        ring: _Ring | None = None
        start = 0
        if pinned:
            node = self._nodes.get(pinned)
            nodes = [node] if node is not None else []
            want = len(nodes)
        elif self._teams_only and affinity.restricts_to_team(policy, team):
            known = self._nodes
            nodes = [known[name] for name in sorted(team) if name in known]
            want = len(nodes)
        else:
            ring = self._eligible.get(cycle.key)
            if ring is None:
                ring = self._eligible_ring(request, cycle)
            nodes = ring.nodes
            start = ring.start % len(nodes) if nodes else 0
            want = feasible_nodes_to_find(len(nodes))

        if ring is None:
            # Few nodes, by name: every filter runs on them.
            feasible, visited, rejected = _walk(nodes, start, want, cycle.narrows, 1.0)
        else:
            feasible, visited, rejected = _walk(
                nodes, start, want, cycle.walk, ring.share, ring.names, cycle.lead
            )
            if visited:
                ring.share = len(feasible) / visited
        if not feasible:
            if ring is not None:
                # The ring holds only what the indexed filters let through: count again over
                # every node of the posting, so each is counted under its first reason.
                posting = self._posting(request)
                everyone = posting.nodes if posting is not None else []
                # When they let every node through, the walk's filters alone give the same
                # counts (in the same order) without building the others.
                narrows = cycle.walk if len(everyone) == len(nodes) else cycle.narrows
                nodes = everyone
                rejected = {}
                narrow_all(narrows, nodes, rejected)
                visited = len(nodes)
            if key is None:
                key = self.framework.filter_key(request)
            failed = self._failure(request, policy, nodes, ring is None, visited, rejected, key)
            if key is not None:
                if len(self._failures) >= _FAILURE_KEYS:
                    self._failures.clear()
                self._failures[key] = failed
            raise failed.error()

        placement, best = _choose(request, policy, team, cycle.rates, feasible, visited, rejected)
        next_start = (start + visited) % len(nodes) if ring is not None else 0
        return _Decision(best, placement.score, ring, next_start, placement)

    def _failure(
        self,
        request: ScheduleRequest,
        policy: NodeAffinityPolicy,
        visited: list[_Node],
        by_name: bool,
        evaluated: int,
        rejected: Rejected,
        key: tuple[Hashable, ...] | None,
    ) -> _Failed:
        """Why no node fits: the walk's counts for the visited nodes (every candidate, as none
        was feasible), the index for the others; and whether waiting could help."""
        total = len(self._nodes)
        counts = dict(rejected)
        node_selector = request.node_selector
        unvisited = total - len(visited)
        pinned = request.node if self._pins else ""
        if pinned:
            # The pinned node's own reason is the answer; the others only were not asked for.
            own = next(iter(rejected), pinning.REASON_UNKNOWN)
            if unvisited:
                other = pinning.REASON.format(node=pinned)
                counts[other] = counts.get(other, 0) + unvisited
            summary = f"0/{total} nodes available: node {pinned} {own}"
        else:
            if by_name:
                # Outside the team: a node missing the selector counts under the selector (it
                # comes first), the rest under the affinity rule.
                ring, rest = self._postings(node_selector)
                match = selector.matches
                matched = (
                    0
                    if ring is None
                    else sum(1 for n in ring.nodes if not rest or match(rest, n.labels))
                )
                team_misses = sum(1 for n in visited if not match(node_selector, n.labels))
                selector_misses = (total - matched) - team_misses
                _add(counts, selector.reason(node_selector), selector_misses)
                _add(counts, affinity.reason(policy, request.team_id), unvisited - selector_misses)
            elif unvisited:
                _add(counts, selector.reason(node_selector), unvisited)
            summary = summarize(total, counts)
        return _Failed(summary, counts, evaluated, self._could_ever_fit(request, key))

    def _posting(self, request: ScheduleRequest) -> _Ring | None:
        """The label index's smallest posting of the selector (all nodes without one), or None
        when no node has one of its pairs."""
        return self._postings(request.node_selector)[0] if self._selects else self._all

    def _eligible_ring(self, request: ScheduleRequest, cycle: Cycle) -> _Ring:
        posting = self._posting(request)
        nodes = posting.nodes if posting is not None else []
        ring = _Ring(narrow_all(cycle.indexed, nodes, {}))
        resume = self._resume.pop(cycle.key, None)
        if resume is not None and ring.names:
            ring.start = bisect_left(ring.names, resume) % len(ring.names)
        if len(self._eligible) >= _ELIGIBLE_KEYS:
            self._eligible.clear()  # request shapes churn: start over rather than track age
        self._eligible[cycle.key] = ring
        return ring

    def _forget_eligible(self) -> None:
        """A node's indexed facts changed: every eligible ring is rebuilt when next needed."""
        for key, ring in self._eligible.items():
            if ring.names:
                self._resume[key] = ring.names[ring.start % len(ring.names)]
        if len(self._resume) > _ELIGIBLE_KEYS:
            self._resume.clear()
        self._eligible.clear()

    def _could_ever_fit(
        self, request: ScheduleRequest, key: tuple[Hashable, ...] | None = None
    ) -> bool:
        """True when some node passes every static filter of the request: only transient ones
        (capacity, readiness, affinity, ...) rule nodes out, so waiting may help. ``key``: the
        request's filter key, when known."""
        pinned = request.node if self._pins else ""
        if pinned:
            node = self._nodes.get(pinned)
            nodes = [node] if node is not None else []
        else:
            ring = self._posting(request)
            nodes = ring.nodes if ring is not None else []
        key = self.framework.static_key(request, key)
        fits = self._fits.get(key) if key is not None else None
        if fits is not None:
            return fits
        static = self.framework.static_narrows(request)
        unused: Rejected = {}
        # In chunks: one node that could fit is enough.
        fits = any(
            narrow_all(static, nodes[i : i + _PROBE], unused) for i in range(0, len(nodes), _PROBE)
        )
        if key is not None:
            if len(self._fits) >= _FAILURE_KEYS:
                self._fits.clear()
            self._fits[key] = fits
        return fits

    def _assume(self, session_id: str, assumed: _Assumed, *, count: bool) -> None:
        name = assumed[0]
        node = self._nodes[name]
        if count:
            node.running += 1
            if self._failures:
                self._failures.clear()
        self._assumed[session_id] = assumed
        team_id = assumed[3]
        if team_id:
            nodes = self._teams.get(team_id)
            if nodes is None:
                nodes = self._teams[team_id] = {}
            nodes[name] = nodes.get(name, 0) + 1

    def _unassume(self, session_id: str) -> bool:
        """Forget the session's placement; True when a running slot was actually given back."""
        assumed = self._assumed.pop(session_id)
        name = assumed[0]
        self._forget_team_member(assumed[3], name)
        node = self._nodes[name]
        if node.running > 0:
            node.running -= 1
            if self._failures:
                self._failures.clear()
            return True
        return False

    def _forget_team_member(self, team_id: str | None, name: str) -> None:
        if not team_id:
            return
        nodes = self._teams[team_id]
        left = nodes[name] - 1
        if left:
            nodes[name] = left
        else:
            del nodes[name]
            if not nodes:
                del self._teams[team_id]


# How many request shapes (keys of the indexed filters) keep their eligible nodes at once.
_ELIGIBLE_KEYS = 256
# How many static scorers' scores a node keeps (the framework keeps their scorers per key).
_SCORES_PER_NODE = 16
# How many filter keys keep their failure, and static keys their could-ever-fit, at once.
_FAILURE_KEYS = 256
# How many nodes the static probe of a failure filters at a time.
_PROBE = 256
# The walk's chunks: a little more than the expected share needs, which is never taken below
# the minimum (a nearly full fleet would otherwise ask for the whole ring at once).
_MARGIN = 1.15
_MIN_SHARE = 0.05
# The first chunk trusts the last decision's share only this far: it had other constraints.
_FIRST_SHARE = 0.25


def _add(counts: Rejected, reason: str, n: int) -> None:
    if n:
        counts[reason] = counts.get(reason, 0) + n


def _walk(
    nodes: list[_Node],
    start: int,
    want: int,
    narrows: Sequence[Narrow],
    share: float,
    names: Sequence[str] = (),
    lead: Sequence[tuple[Collection[str], str]] = (),
) -> tuple[list[_Node], int, Rejected]:
    """Walk ``nodes`` from ``start`` (wrapping) through the filters, stopping at the
    ``want``-th feasible node. Returns (the feasible nodes in walk order, nodes visited, the
    visited nodes rejected by reason).

    The filters run over chunks sized by the share of nodes expected feasible (``share`` at
    first, the last decision's; then what this walk found). A chunk holding enough is cut
    after the last one needed and the counts of its tail (every node past it, feasible or
    not) taken back, so the visited nodes and their counts are exactly those of a
    node-by-node walk, whatever the sizes.

    ``lead`` are the first filters of ``narrows`` as (names ruled out, reason), given with
    ``names``, the nodes' names (sorted): their nodes are found by name once, and each chunk
    drops those it holds instead of running those filters over it.
    """
    n = len(nodes)
    feasible: list[_Node] = []
    rejected: Rejected = {}
    visited = 0
    pos = start
    # The lead filters' nodes, by how far from the start the walk meets them.
    spots: dict[int, str] = {}
    for ruled, why in lead:
        for name in ruled:
            i = bisect_left(names, name)
            if i < n and names[i] == name:
                spots.setdefault((i - start) % n, why)  # the first filter's reason counts
    rest = narrows[len(lead) :]
    expect = min(1.0, max(share, _FIRST_SHARE))
    while visited < n:
        need = want - len(feasible)
        if need <= 0:
            break
        if visited:
            expect = len(feasible) / visited if feasible else expect / 4
        if expect >= 1.0:
            size = min(n - visited, need)  # all were feasible: exactly as many as needed
        else:
            size = min(n - visited, int(need / max(expect, _MIN_SHARE) * _MARGIN) + 1)
        end = pos + size
        chunk = nodes[pos:end] if end <= n else nodes[pos:] + nodes[: end - n]
        passed = chunk
        if spots:
            hits = sorted(k - visited for k in spots if visited <= k < visited + size)
            if hits:
                passed = chunk[:]
                for k in reversed(hits):
                    why = spots[k + visited]
                    rejected[why] = rejected.get(why, 0) + 1
                    del passed[k]
        kept = narrow_all(rest, passed, rejected)
        if len(kept) >= need and kept[need - 1] is not chunk[-1]:
            # Enough, with nodes after the last one needed (feasible or not): a node-by-node
            # walk would not have reached them. list.index compares by identity first, and
            # _Node has no __eq__.
            cut = chunk.index(kept[need - 1]) + 1
            tail: Rejected = {}
            narrow_all(narrows, chunk[cut:], tail)
            for why, k in tail.items():
                left = rejected[why] - k
                if left:
                    rejected[why] = left
                else:
                    del rejected[why]
            kept = kept[:need]
            size = cut
        feasible += kept
        visited += size
        pos = (pos + size) % n
    return feasible, visited, rejected


def _remember(rate: Rate) -> Rate:
    """A static scorer's ``rate`` that reads each node's score under its own token when every
    node has one, and otherwise rates them all and keeps their scores there (the same floats).
    Node records hold the token as a key, so it lives as long as a score kept under it."""
    token = object()

    def remembered(nodes: Sequence[_Node]) -> list[float]:
        try:
            return [n.scores[token] for n in nodes]
        except KeyError:
            pass
        fresh = rate(nodes)
        for node, score in zip(nodes, fresh, strict=True):
            kept = node.scores
            if len(kept) >= _SCORES_PER_NODE:
                kept.clear()  # request shapes churn: start over rather than track age
            kept[token] = score
        return fresh

    return remembered


def _choose(
    request: ScheduleRequest,
    policy: NodeAffinityPolicy,
    team: Mapping[str, int],
    rates: Rates,
    feasible: list[_Node],
    visited: int,
    rejected: Rejected,
) -> tuple[Placement, _Node]:
    """Score the feasible nodes, take the best, and record the decision (its candidates are
    ranked when the record is read)."""
    feasible = _name_order(feasible)
    totals, each = rate_all(rates, feasible)
    top = max(totals)
    i = totals.index(top)
    if totals.count(top) > 1:
        # Ties: fewest running, then name (min keeps the first, and feasible is by name).
        tied = [k for k in range(i, len(totals)) if totals[k] == top]
        i = min(tied, key=lambda k: feasible[k].running)
    best = feasible[i]
    why = (
        f"{policy}: best of {len(feasible)} feasible nodes ({visited} checked), "
        f"{best.running}/{best.capacity} running"
    )
    on_node = team.get(best.name, 0)
    if on_node:
        why += f", {on_node} of team {request.team_id} there"
    record = PlacementRecord.ranked_when_read(
        evaluated=visited,
        feasible=len(feasible),
        rejected=rejected,
        chosen=best.name,
        summary=why,
        rank=_ranking(rates, feasible, totals, each),
    )
    return Placement(node=best.name, score=top, reason=why, record=record), best


def _ranking(
    rates: Rates, feasible: list[_Node], totals: list[float], each: list[list[float]]
) -> Callable[[], tuple[NodeScore, ...]]:
    """The record's best candidates, each plugin's weighted share of their score, worked out
    later from what the decision saw: the scores, and the running counts (they break ties,
    and the next placement changes them)."""
    running = [node.running for node in feasible]

    def rank() -> tuple[NodeScore, ...]:
        weighted = [
            (name, share, scores) for (name, share, _rate), scores in zip(rates, each, strict=True)
        ]
        return tuple(
            NodeScore(
                feasible[i].name,
                totals[i],
                {name: share * scores[i] for name, share, scores in weighted},
            )
            for i in _best_first(totals, running)
        )

    return rank


def _name_order(nodes: list[_Node]) -> list[_Node]:
    """The walk's nodes (names ascending from where it started, wrapping once) by name."""
    if len(nodes) < 2:
        return nodes
    first = nodes[0].name
    if nodes[-1].name > first:
        return nodes  # it did not wrap: the last name would sort before the first
    # Past the wrap every name sorts before the first one: a binary search finds it.
    wrap = bisect_left(nodes, True, key=lambda n: n.name < first)
    return nodes[wrap:] + nodes[:wrap] if wrap < len(nodes) else nodes


def _best_first(totals: list[float], running: list[int]) -> list[int]:
    """Indices of the best RECORD_CANDIDATES nodes, best first: highest total, then fewest
    running, then name. The nodes are in name order and every sort is stable with a C-level
    key, so ties keep name order; only the head of the order is tie-broken on running."""
    n = len(totals)
    if n == 1:
        return [0]
    order = sorted(range(n), key=totals.__getitem__, reverse=True)
    keep = min(RECORD_CANDIDATES, n)
    end = keep
    cut = totals[order[keep - 1]]
    while end < n and totals[order[end]] == cut:
        end += 1  # the tie at the cut, whole
    head = order[:end]
    if len(set(map(totals.__getitem__, head))) == len(head):
        return head[:keep]  # no two equal totals: running cannot matter
    head.sort(key=running.__getitem__)
    head.sort(key=totals.__getitem__, reverse=True)
    return head[:keep]


def _check_constraints(request: ScheduleRequest) -> None:
    """The request's node constraints are of the right kinds (RequestValidationError)."""
    if not isinstance(request.node, str):
        raise RequestValidationError("node", ERR_TEXT)
    if not isinstance(request.model, str):
        raise RequestValidationError("model", ERR_TEXT)
    # all(map(...)) over str.__instancecheck__: isinstance for each, without a generator.
    wanted = request.capabilities
    if wanted and (isinstance(wanted, str) or not all(map(_is_str, wanted))):
        raise RequestValidationError("capabilities", ERR_STRINGS)
    preferred = request.prefer_labels
    if preferred and not (all(map(_is_str, preferred)) and all(map(_is_str, preferred.values()))):
        raise RequestValidationError("prefer_labels", ERR_LABELS)
    memory = request.min_free_memory_mb
    if memory is not None and (not _is_int(memory) or memory < 0):
        raise RequestValidationError("min_free_memory_mb", ERR_MEMORY)
    cpu = request.max_cpu_percent
    if cpu is not None and (not _is_number(cpu) or not 0 <= cpu <= 100):
        raise RequestValidationError("max_cpu_percent", ERR_CPU)


def _check_node_extras(info: NodeInfo) -> None:
    name = info.name
    for field, names in (("capabilities", info.capabilities), ("models", info.models)):
        if isinstance(names, str) or not all(isinstance(x, str) for x in names):
            raise ValueError(ERR_NODE_NAMES.format(name=name, field=field))
    for field, figure in (
        ("cpu_percent", info.cpu_percent),
        ("free_memory_mb", info.free_memory_mb),
        ("free_disk_mb", info.free_disk_mb),
    ):
        if figure is not None and (not _is_number(figure) or figure < 0):
            raise ValueError(ERR_NODE_FIGURE.format(name=name, field=field))


_is_str = str.__instancecheck__


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value
