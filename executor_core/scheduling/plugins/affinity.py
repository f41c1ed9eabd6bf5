"""Team affinity (DESIGN §5): where a team's members go relative to each other.

``members`` maps node name → active tasks of the request's team on it (the team_nodes hint
with empty entries dropped).

| policy           | filter                                           | score                 |
|------------------|--------------------------------------------------|-----------------------|
| none             | -                                                | least loaded          |
| prefer_colocate  | -                                                | bonus on team nodes   |
| require_colocate | only team nodes (any node before the first one)  | least loaded          |
| prefer_spread    | -                                                | penalty per member    |
| require_spread   | no team node                                     | least loaded          |

Every score is 0-100 and is a single correctly rounded division of integers, so two nodes
with the same free fraction score exactly the same and the tie-break (fewest running, then
name) decides between them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

from executor_core.scheduling.plugins.base import (
    Filter,
    Narrow,
    Rate,
    Rejected,
    Score,
    narrow_out,
    reject,
)
from executor_core.scheduling.types import ScheduleRequest
from executor_core.types import NodeAffinityPolicy

NAME = "TeamAffinity"
REASON_COLOCATE = "not on a node of team {team} (require_colocate)"
REASON_SPREAD = "already hosting a member of team {team} (require_spread)"

Scorer = Callable[[int, int, int], float]
# Bound once: an enum member looked up on its class costs ~90 ns, too much per node. Policies
# are compared with == so a plain string ("require_spread") works as well.
_COLOCATE = NodeAffinityPolicy.REQUIRE_COLOCATE
_SPREAD = NodeAffinityPolicy.REQUIRE_SPREAD
REQUIRES_TEAM = frozenset({_COLOCATE, _SPREAD})


def members(team_nodes: Mapping[str, int]) -> dict[str, int]:
    """The nodes that really host a team member (a count of zero or less is no member)."""
    return {node: count for node, count in team_nodes.items() if count > 0}


def restricts_to_team(policy: NodeAffinityPolicy, team: Mapping[str, int]) -> bool:
    """True when only the team's nodes can qualify, so nothing else needs a look."""
    return policy == _COLOCATE and bool(team)


def reason(policy: NodeAffinityPolicy, team_id: str | None) -> str:
    template = REASON_COLOCATE if policy == _COLOCATE else REASON_SPREAD
    return template.format(team=team_id or "-")


def least_loaded(running: int, capacity: int, on_node: int) -> float:
    """100 for an idle node, falling to 0 at capacity."""
    if capacity <= 0 or running >= capacity:
        return 0.0
    return 100.0 * (capacity - running) / capacity


def colocate(running: int, capacity: int, on_node: int) -> float:
    """Team nodes score 50-100 by free room, other nodes 0-50: a team node with room wins."""
    base = least_loaded(running, capacity, 0) / 2
    return base + 50.0 if on_node > 0 else base


def spread(running: int, capacity: int, on_node: int) -> float:
    """Each member already on the node halves the score.

    A node with room scores (50, 100] before halving, so the tiers never overlap: fewer
    members always wins and load decides between nodes with as many members.
    """
    if capacity <= 0 or running >= capacity:
        return 0.0
    # Halving by shifting the divisor keeps it one exact division; past 64 members the score
    # is ~0 anyway, and the cap keeps the divisor within float range.
    return 50.0 * (2 * capacity - running) / (capacity << min(on_node, 64))


SCORERS: dict[NodeAffinityPolicy, Scorer] = {
    NodeAffinityPolicy.NONE: least_loaded,
    NodeAffinityPolicy.PREFER_COLOCATE: colocate,
    NodeAffinityPolicy.REQUIRE_COLOCATE: least_loaded,
    NodeAffinityPolicy.PREFER_SPREAD: spread,
    NodeAffinityPolicy.REQUIRE_SPREAD: least_loaded,
}
# Policies whose score depends on how many members a node already hosts.
COUNTS_MEMBERS = frozenset({NodeAffinityPolicy.PREFER_COLOCATE, NodeAffinityPolicy.PREFER_SPREAD})


def score(policy: NodeAffinityPolicy, running: int, capacity: int, on_node: int) -> float:
    return SCORERS[policy](running, capacity, on_node)


class TeamAffinity(Filter, Score):
    name = NAME
    transient = True  # members finish and leave their nodes

    def request_key(self, request: ScheduleRequest) -> Hashable:
        policy = request.hints.affinity
        if policy not in REQUIRES_TEAM:
            return None
        team = members(request.hints.team_nodes)
        if not team:
            return None
        return (policy, request.team_id, frozenset(team))

    def ruled_out(self, request: ScheduleRequest) -> tuple[frozenset[str], str] | None:
        """require_spread's team nodes (require_colocate rules out every other node)."""
        if request.hints.affinity != _SPREAD:
            return None
        team = members(request.hints.team_nodes)
        return (frozenset(team), reason(_SPREAD, request.team_id)) if team else None

    def prefilter(self, request: ScheduleRequest) -> Narrow | None:
        policy = request.hints.affinity
        if policy not in REQUIRES_TEAM:
            return None
        if policy != _COLOCATE:
            ruled = self.ruled_out(request)
            return narrow_out(*ruled) if ruled is not None else None
        team = members(request.hints.team_nodes)
        if not team:
            return None  # before the first member is placed, any node will do
        team_id = request.team_id

        # The reason is worded only when a node is ruled out: most walks meet no team node.
        def narrow(nodes: list[Any], rejected: Rejected) -> list[Any]:
            kept = [n for n in nodes if n.name in team]
            if len(kept) < len(nodes):
                reject(rejected, reason(policy, team_id), nodes, kept)
            return kept

        return narrow

    def prescore(self, request: ScheduleRequest) -> Rate:
        policy = request.hints.affinity
        scorer = SCORERS[policy]
        team = request.hints.team_nodes
        if policy in COUNTS_MEMBERS and team:
            on = members(team)
            return _colocate(on) if scorer is colocate else _spread(on)
        if scorer is least_loaded:
            return _least_loaded

        def rate(nodes: Any) -> list[float]:
            return [scorer(n.running, n.capacity, 0) for n in nodes]

        return rate


# The per-node scorers above over a list. A node without team members scores by its running
# count and capacity alone, two small ints, so each such score is computed once by the scorer
# itself and then looked up (mixed int and float arithmetic costs a node about three times
# what two dict look-ups do); the rest is inline, as a call per node costs more than the rule.
# Same functions, so the same floats.

# How many (capacity, running) scores a table keeps; past that it computes the others.
_KEPT = 1 << 16


class _ByLoad:
    """``score(running, capacity, 0)`` by capacity, then running, for nodes with room."""

    __slots__ = ("rows", "score", "size")

    def __init__(self, score: Scorer) -> None:
        self.score = score
        self.rows: dict[int, dict[int, float]] = {}
        self.size = 0

    def learn(self, nodes: Any) -> bool:
        """Keep the scores of the nodes with room; False when the table is full."""
        rows = self.rows
        for n in nodes:
            r, c = n.running, n.capacity
            if r < c:
                row = rows.setdefault(c, {})
                if r not in row:
                    if self.size >= _KEPT:
                        return False
                    row[r] = self.score(r, c, 0)
                    self.size += 1
        return True


_FREE = _ByLoad(least_loaded)
_HALF_FREE = _ByLoad(colocate)  # a node outside the team: half its least-loaded score
_ALONE = _ByLoad(spread)


def _least_loaded(nodes: Any) -> list[float]:
    rows = _FREE.rows
    try:
        return [rows[c][r] if (r := n.running) < (c := n.capacity) else 0.0 for n in nodes]
    except KeyError:
        if _FREE.learn(nodes):
            return _least_loaded(nodes)
    return [least_loaded(n.running, n.capacity, 0) for n in nodes]


def _colocate(team: Mapping[str, int]) -> Rate:
    # A team node's score is the other nodes' plus 50.
    def rate(nodes: Any) -> list[float]:
        rows = _HALF_FREE.rows
        try:
            return [
                (rows[c][r] if (r := n.running) < (c := n.capacity) and c > 0 else 0.0)
                + (50.0 if n.name in team else 0.0)
                for n in nodes
            ]
        except KeyError:
            if _HALF_FREE.learn(nodes):
                return rate(nodes)
        return [colocate(n.running, n.capacity, 1 if n.name in team else 0) for n in nodes]

    return rate


def _spread(team: Mapping[str, int]) -> Rate:
    # The shift is capped per member count once, not per node.
    shift = {name: min(count, 64) for name, count in team.items()}

    def rate(nodes: Any) -> list[float]:
        rows = _ALONE.rows
        try:
            return [
                (
                    50.0 * (2 * c - r) / (c << shift[name])
                    if (name := n.name) in shift
                    else rows[c][r]
                )
                if (r := n.running) < (c := n.capacity) and c > 0
                else 0.0
                for n in nodes
            ]
        except KeyError:
            if _ALONE.learn(nodes):
                return rate(nodes)
        return [spread(n.running, n.capacity, shift.get(n.name, 0)) for n in nodes]

    return rate
