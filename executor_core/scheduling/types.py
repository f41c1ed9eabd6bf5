"""Value types shared by the scheduler, its plugins and its callers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

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


@dataclass(frozen=True)
class NodeInfo:
    """What the scheduler knows of one node. Empty ``agents`` means it runs any agent."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    capacity: int = 1
    running: int = 0
    ready: bool = True
    cordoned: bool = False
    agents: frozenset[str] = frozenset()

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
    session_id: str
    agent_id: str
    team_id: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    hints: ScheduleHints = field(default_factory=ScheduleHints)
    attempt: int = 1


@dataclass(frozen=True)
class Placement:
    """The scheduler's decision: the node, its normalised score (0-100) and why."""

    node: str
    score: float
    reason: str


class SchedulingError(ExecutorError):
    """No feasible node. ``reason`` says what ruled the nodes out, kube-scheduler style."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Scheduler(Protocol):
    """Places one request on a node, or raises SchedulingError."""

    async def schedule(self, request: ScheduleRequest) -> Placement: ...
