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

The hot loop calls the pure functions the plugins are built from (``plugins/*``), so a rule is
written once. On failure the plugins themselves run over the visited nodes to say why.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from itertools import chain
from typing import NamedTuple

from executor_core.scheduling.framework import count_reasons, default_registry, summarize
from executor_core.scheduling.plugins import (
    affinity,
    agents,
    capacity,
    exclusion,
    readiness,
    selector,
)
from executor_core.scheduling.types import NodeInfo, Placement, ScheduleRequest, SchedulingError
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
        "schedulable",
    )

    def __init__(self, name: str) -> None:
        self.name = name
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
        self.schedulable = False

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
        # Readiness only changes through upsert, so it is decided here, once, by the plugin.
        self.schedulable = readiness.unschedulable_reason(self.ready, self.cordoned) is None

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

    __slots__ = ("names", "nodes", "start")

    def __init__(self) -> None:
        self.names: list[str] = []
        self.nodes: list[_Node] = []
        self.start = 0

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

    def __init__(self, nodes: Iterable[NodeInfo] = ()) -> None:
        self._lock = threading.Lock()
        self._nodes: dict[str, _Node] = {}
        self._all = _Ring()
        self._index: dict[tuple[str, str], _Ring] = {}
        self._assumed: dict[str, _Assumed] = {}
        self._teams: dict[str, dict[str, int]] = {}
        self._filters = default_registry().filters()
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
        with self._lock:
            node = self._nodes.get(name)
            if node is None:
                node = self._nodes[name] = _Node(name)
                node.update(info)
                self._all.add(node)
                self._index_labels(node, node.labels.items())
                return
            if node.labels == info.labels:
                node.update(info)
                return
            old = set(node.labels.items())
            node.update(info)
            new = set(node.labels.items())
            self._unindex_labels(name, old - new)
            self._index_labels(node, new - old)

    def remove_node(self, name: str) -> bool:
        """Forget the node and the sessions assumed on it. False when it was unknown."""
        with self._lock:
            node = self._nodes.pop(name, None)
            if node is None:
                return False
            self._all.discard(name)
            self._unindex_labels(name, node.labels.items())
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
        team = affinity.members(hints.team_nodes) if hints.team_nodes else _EMPTY_TEAM
        node_selector = request.node_selector

        ring: _Ring | None
        if affinity.restricts_to_team(policy, team):
            known = self._nodes
            nodes = [known[name] for name in sorted(team) if name in known]
            ring, rest, start, want = None, node_selector, 0, len(nodes)
        else:
            ring, rest = self._postings(node_selector)
            nodes = ring.nodes if ring is not None else []
            start = ring.start % len(nodes) if nodes else 0
            want = feasible_nodes_to_find(len(nodes))

        best, score, found, visited = _scan(
            nodes, start, want, rest, request.agent_id, hints.excluded_nodes, policy, team
        )
        if best is None:
            raise SchedulingError(
                self._explain(request, policy, team, nodes, ring is None),
                waitable=self._could_ever_fit(request),
            )

        on_node = team.get(best.name, 0)
        why = (
            f"{policy}: best of {found} feasible nodes ({visited} checked), "
            f"{best.running}/{best.capacity} running"
        )
        if on_node:
            why += f", {on_node} of team {request.team_id} there"
        placement = Placement(node=best.name, score=score, reason=why)
        next_start = (start + visited) % len(nodes) if ring is not None else 0
        return _Decision(best, score, ring, next_start, placement)

    def _explain(
        self,
        request: ScheduleRequest,
        policy: NodeAffinityPolicy,
        team: Mapping[str, int],
        visited: list[_Node],
        team_only: bool,
    ) -> str:
        """Why no node fits: the plugins judge the visited nodes, the index the others."""
        total = len(self._nodes)
        counts, _ = count_reasons(self._filters, visited, request)
        node_selector = request.node_selector
        unvisited = total - len(visited)
        if team_only:
            # Outside the team: a node missing the selector counts under the selector (it comes
            # first), the rest under the affinity rule.
            ring, rest = self._postings(node_selector)
            match = selector.matches
            matched = (
                0
                if ring is None
                else sum(1 for n in ring.nodes if not rest or match(rest, n.labels))
            )
            team_misses = sum(1 for n in visited if not match(node_selector, n.labels))
            selector_misses = (total - matched) - team_misses
            counts[selector.reason(node_selector)] += selector_misses
            counts[affinity.reason(policy, request.team_id)] += unvisited - selector_misses
        elif unvisited:
            counts[selector.reason(node_selector)] += unvisited
        return summarize(total, counts)

    def _could_ever_fit(self, request: ScheduleRequest) -> bool:
        """True when some node meets the request's static constraints (selector, agent)."""
        ring, rest = self._postings(request.node_selector)
        if ring is None:
            return False
        match, supports, agent_id = selector.matches, agents.supports, request.agent_id
        return any(
            (not rest or match(rest, n.labels)) and supports(n.agents, agent_id) for n in ring.nodes
        )

    def _assume(self, session_id: str, assumed: _Assumed, *, count: bool) -> None:
        name = assumed[0]
        node = self._nodes[name]
        if count:
            node.running += 1
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


def _scan(
    nodes: list[_Node],
    start: int,
    want: int,
    rest: Mapping[str, str],
    agent_id: str,
    excluded: frozenset[str],
    policy: NodeAffinityPolicy,
    team: Mapping[str, int],
) -> tuple[_Node | None, float, int, int]:
    """Walk ``nodes`` from ``start`` (wrapping), keep the best feasible one, stop after
    ``want`` feasible. Returns (best, its score, feasible found, nodes visited).

    The fused hot loop: the plugins' pure functions bound to locals, no per-node allocation.
    """
    n = len(nodes)
    if n == 0:
        return None, 0.0, 0, 0
    has_room = capacity.has_room
    supports = agents.supports
    matches = selector.matches
    not_excluded = exclusion.allows
    allows = affinity.allows
    score_of = affinity.SCORERS[policy]
    check_affinity = affinity.filters(policy, team)
    counts_members = bool(team) and policy in affinity.COUNTS_MEMBERS
    members_on = team.get

    best: _Node | None = None
    best_score = -1.0
    best_running = 0
    best_name = ""
    found = 0
    i = start
    for i in chain(range(start, n), range(start)):
        node = nodes[i]
        if not node.schedulable:
            continue
        running = node.running
        cap = node.capacity
        if not has_room(running, cap):
            continue
        if rest and not matches(rest, node.labels):
            continue
        if not supports(node.agents, agent_id):
            continue
        name = node.name
        if excluded and not not_excluded(name, excluded):
            continue
        if check_affinity and not allows(policy, name, team):
            continue
        score = score_of(running, cap, members_on(name, 0) if counts_members else 0)
        found += 1
        if score > best_score or (
            score == best_score
            and (running < best_running or (running == best_running and name < best_name))
        ):
            best, best_score, best_running, best_name = node, score, running, name
        if found >= want:
            break
    visited = i - start + 1 if i >= start else n - start + i + 1
    return best, best_score, found, visited
