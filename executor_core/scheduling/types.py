"""Value types shared by the scheduler, its plugins and its callers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple, Protocol

from executor_core.types import ExecutorError, NodeAffinityPolicy


class NodeView(Protocol):
    """The read-only face of a node that filter and score plugins look at.

    NodeInfo is one; the cluster passes its own live records, which have the same attributes,
    so explaining a failure does not copy every node.
    """

    @property
    def name(self) -> str: ...
    @property
    def labels(self) -> Mapping[str, str]: ...
    @property
    def capacity(self) -> int: ...
    @property
    def running(self) -> int: ...
    @property
    def ready(self) -> bool: ...
    @property
    def cordoned(self) -> bool: ...
    @property
    def agents(self) -> frozenset[str]: ...
    @property
    def capabilities(self) -> frozenset[str]: ...
    @property
    def models(self) -> frozenset[str]: ...
    @property
    def cpu_percent(self) -> float | None: ...
    @property
    def free_memory_mb(self) -> int | None: ...
    @property
    def free_disk_mb(self) -> int | None: ...


@dataclass(frozen=True)
class NodeInfo:
    """What the scheduler knows of one node. Empty ``agents`` means it runs any agent.

    ``capabilities`` and ``models`` are what the node advertises (``hello``); the resource
    figures come from its latest heartbeat, None when it did not report them.
    """

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    capacity: int = 1
    running: int = 0
    ready: bool = True
    cordoned: bool = False
    agents: frozenset[str] = frozenset()
    capabilities: frozenset[str] = frozenset()
    models: frozenset[str] = frozenset()
    cpu_percent: float | None = None
    free_memory_mb: int | None = None
    free_disk_mb: int | None = None

    @property
    def free(self) -> int:
        return self.capacity - self.running

    @property
    def load(self) -> float:
        """Fraction of capacity in use, 0.0 .. 1.0 (1.0 for a node without capacity)."""
        return self.running / self.capacity if self.capacity > 0 else 1.0


@dataclass(frozen=True)
class ScheduleHints:
    """Placement hints. ``team_nodes`` maps node name → the team's active tasks on it."""

    affinity: NodeAffinityPolicy = NodeAffinityPolicy.NONE
    team_nodes: Mapping[str, int] = field(default_factory=dict)
    # Nodes this request must not go to (a retry never returns to the node that lost it).
    excluded_nodes: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ScheduleRequest:
    """One placement to decide.

    Hard constraints: ``node_selector``, ``node`` (this node only), ``capabilities`` (the node
    advertises all), ``model`` (the node serves it), ``min_free_memory_mb`` and
    ``max_cpu_percent`` (on the node's latest heartbeat; a node that did not report the figure
    is ruled out). Soft: ``prefer_labels`` (each matching label raises the score) and resource
    headroom.
    """

    session_id: str
    agent_id: str
    team_id: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    hints: ScheduleHints = field(default_factory=ScheduleHints)
    attempt: int = 1
    node: str = ""
    prefer_labels: Mapping[str, str] = field(default_factory=dict)
    capabilities: frozenset[str] = frozenset()
    min_free_memory_mb: int | None = None
    max_cpu_percent: float | None = None
    model: str = ""


class NodeScore(NamedTuple):
    """One node as a decision saw it. ``scores`` maps score plugin → its weighted score.

    A named tuple rather than a frozen dataclass: every decision builds a few for its record,
    and a tuple is built in less than half the time.
    """

    node: str
    total: float
    scores: Mapping[str, float]
    eligible: bool = True
    reason: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "node": self.node,
            "total": round(self.total, 3),
            "scores": {name: round(value, 3) for name, value in self.scores.items()},
        }


# How many of the best candidates a placement record keeps.
RECORD_CANDIDATES = 5


@dataclass(frozen=True)
class PlacementRecord:
    """What a decision looked at: nodes visited, how many were feasible, the rejected ones
    counted by reason, the best few candidates (best first) and the node chosen (None when
    nothing fit). ``summary`` is the one-line account (the failure reason, or why that node).
    """

    evaluated: int
    feasible: int
    rejected: Mapping[str, int]
    candidates: tuple[NodeScore, ...]
    chosen: str | None
    summary: str

    @classmethod
    def ranked_when_read(
        cls,
        *,
        evaluated: int,
        feasible: int,
        rejected: Mapping[str, int],
        chosen: str | None,
        summary: str,
        rank: Callable[[], tuple[NodeScore, ...]],
    ) -> PlacementRecord:
        """A record whose candidates ``rank()`` gives the first time they are read.

        Ranking the candidates and building their scores costs a decision more than all
        else it records, and a decision that only estimates is never read: the scheduler
        pays for it only when someone looks. ``rank`` must rely on what the decision saw,
        never on live state; read, the record is the same as one built with its candidates.
        """
        record = object.__new__(cls)
        # Frozen: the fields go straight into the instance dict, as the dataclass's own
        # __init__ does through object.__setattr__.
        record.__dict__.update(
            evaluated=evaluated,
            feasible=feasible,
            rejected=rejected,
            chosen=chosen,
            summary=summary,
            _rank=rank,
        )
        return record

    def __getattr__(self, name: str) -> Any:
        # Reached only for an attribute the instance lacks: the candidates of a record
        # ranked when read, the first time. Two threads may both rank: same result.
        rank = self.__dict__.get("_rank") if name == "candidates" else None
        if rank is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        candidates = rank()
        self.__dict__["candidates"] = candidates
        return candidates

    def __getstate__(self) -> dict[str, object]:
        # Copies and pickles carry the candidates themselves, never the ranking closure.
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_dict(self) -> dict[str, object]:
        """A JSON-safe dict, floats rounded to 3 places (what the hub stores and serves)."""
        return {
            "evaluated": self.evaluated,
            "feasible": self.feasible,
            "rejected": dict(self.rejected),
            "candidates": [c.to_dict() for c in self.candidates[:RECORD_CANDIDATES]],
            "chosen": self.chosen,
            "summary": self.summary,
        }


@dataclass(frozen=True)
class Placement:
    """The scheduler's decision: the node, its normalised score (0-100), why, and the record
    of the decision (left out of comparisons: two placements on the same node for the same
    reason are the same placement, however the candidates looked)."""

    node: str
    score: float
    reason: str
    record: PlacementRecord | None = field(default=None, compare=False)


class SchedulingError(ExecutorError):
    """No feasible node. ``reason`` says what ruled the nodes out, kube-scheduler style.

    ``waitable`` is True when waiting could help: some node passes every static filter and
    only transient ones (capacity, readiness, resources, ...) rule nodes out now. False when no
    node of the fleet could ever meet the request's static constraints.
    """

    def __init__(
        self, reason: str, *, record: PlacementRecord | None = None, waitable: bool = False
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.record = record
        self.waitable = waitable


class Scheduler(Protocol):
    """Places one request on a node, or raises SchedulingError."""

    async def schedule(self, request: ScheduleRequest) -> Placement: ...
