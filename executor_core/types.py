"""The routing vocabulary: strategies, affinity policies, the request, results and errors."""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from executor_core.labels import (
    label_count_error,
    label_key_error,
    label_value_error,
    names_error,
    node_name_error,
)

MAX_MODEL_CHARS = 128
MAX_PRIORITY = 1_000_000
MAX_WAIT = 86_400.0  # a day
MAX_TIMEOUT = 7 * 86_400.0  # a week
MAX_FREE_MEMORY_MB = 1 << 40  # a megabyte count no machine reaches


def model_name_error(value: object) -> str | None:
    """Why ``value`` is not a model name (``gpt-4o-mini``, ``org/model:tag``), or None."""
    if not isinstance(value, str):
        return "must be a string"
    if len(value) > MAX_MODEL_CHARS:
        return f"must be at most {MAX_MODEL_CHARS} characters (got {len(value)})"
    if any(c.isspace() or not c.isprintable() for c in value):
        return "must not contain spaces or control characters"
    return None


class ExecutionStrategy(enum.StrEnum):
    """Where a SubAgent should execute."""

    LOCAL = "local"
    GOLEM = "golem"
    AUTO = "auto"

    @classmethod
    def is_valid(cls, value: object) -> bool:
        """True when ``value`` is one of the known strategies (an enum member or its string)."""
        return value in cls._value2member_map_ or isinstance(value, cls)


class NodeAffinityPolicy(enum.StrEnum):
    """How a team's members are placed relative to each other (DESIGN §5)."""

    NONE = "none"
    PREFER_COLOCATE = "prefer_colocate"
    REQUIRE_COLOCATE = "require_colocate"
    PREFER_SPREAD = "prefer_spread"
    REQUIRE_SPREAD = "require_spread"

    @classmethod
    def is_valid(cls, value: object) -> bool:
        return value in cls._value2member_map_ or isinstance(value, cls)

    @property
    def requires_team(self) -> bool:
        """Every policy but ``none`` is about a team's members, so it means nothing without
        one: ``prefer_*`` is refused too rather than silently ignored."""
        return self is not NodeAffinityPolicy.NONE


class TaskStatus(enum.StrEnum):
    """The lifecycle of a task (DESIGN §4)."""

    PENDING = "pending"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED})


class ExecutorError(Exception):
    """Base class of every error raised by executor_core."""


class RequestValidationError(ExecutorError, ValueError):
    """An ExecuteRequest field is invalid. ``field`` names it, ``message`` says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class UnregisteredStrategyError(ExecutorError, LookupError):
    """The router has no executor for the strategy it needs."""


class AtCapacityError(ExecutorError):
    """The executor's queue is full; the submission is refused rather than dropped."""


class ExecutionCancelled(ExecutorError):
    """The run was cancelled before it finished."""


class UnknownAgentError(ExecutorError, LookupError):
    """No agent is registered under the requested id; the message lists the known ones."""

    def __init__(self, agent_id: str, known: Iterable[str] = ()) -> None:
        self.agent_id = agent_id
        self.known = sorted(known)
        listed = ", ".join(self.known) if self.known else "none registered"
        super().__init__(f"unknown agent {agent_id!r} (known agents: {listed})")


class AgentFailure(ExecutorError):
    """An agent reports that its run failed; the message is the task's error."""


class DispatchError(ExecutorError):
    """The node did not accept the task (a scheduling-phase failure: fall back to local)."""

    def __init__(self, message: str, *, node: str | None = None) -> None:
        super().__init__(message)
        self.node = node


@dataclass(frozen=True)
class ExecuteRequest:
    """One SubAgent run with its routing metadata, validated on construction."""

    agent_id: str
    session_id: str
    input: str
    strategy: ExecutionStrategy = ExecutionStrategy.AUTO
    team_id: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    affinity_policy: NodeAffinityPolicy = NodeAffinityPolicy.NONE
    # Which run of the session this is (1 first; a retry or a forced fallback is a new one):
    # passed explicitly, so reports from an earlier attempt are told apart.
    attempt: int = 1
    # Nodes this run must not go to (a retry never returns to the node that lost it).
    excluded_nodes: frozenset[str] = frozenset()
    # Set when a scheduling-phase failure sends the run to the local executor: why.
    fallback_reason: str = ""
    # Placement constraints (DESIGN §11): this node only; labels that raise a node's score
    # (soft); capabilities the node must advertise; limits on its latest heartbeat; a model
    # the node must serve (the agent gets it too).
    node: str = ""
    prefer_labels: Mapping[str, str] = field(default_factory=dict)
    capabilities: frozenset[str] = frozenset()
    min_free_memory_mb: int | None = None
    max_cpu_percent: float | None = None
    model: str = ""
    # Higher first when tasks wait for a node; how long it may wait (None: the caller's
    # default, 0: fall back at once); how long the run may last (None: no limit).
    priority: int = 0
    max_wait: float | None = None
    timeout: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.attempt, bool) or not isinstance(self.attempt, int) or self.attempt < 1:
            raise RequestValidationError("attempt", "must be an integer >= 1")
        object.__setattr__(self, "excluded_nodes", frozenset(self.excluded_nodes))
        if not isinstance(self.agent_id, str) or not self.agent_id.strip():
            raise RequestValidationError("agent_id", "must be a non-empty string")
        if not isinstance(self.session_id, str) or not self.session_id:
            raise RequestValidationError("session_id", "must be a non-empty string")
        if not isinstance(self.input, str):
            raise RequestValidationError("input", "must be a string")
        if self.strategy in ("", None):  # as the Go router: an empty strategy means local
            object.__setattr__(self, "strategy", ExecutionStrategy.LOCAL)
        if not ExecutionStrategy.is_valid(self.strategy):
            choices = ", ".join(s.value for s in ExecutionStrategy)
            raise RequestValidationError(
                "strategy", f"unknown strategy {self.strategy!r} (expected one of {choices})"
            )
        if not NodeAffinityPolicy.is_valid(self.affinity_policy):
            choices = ", ".join(p.value for p in NodeAffinityPolicy)
            raise RequestValidationError(
                "affinity_policy",
                f"unknown affinity policy {self.affinity_policy!r} (expected one of {choices})",
            )
        # Frozen dataclass: normalise through object.__setattr__.
        object.__setattr__(self, "strategy", ExecutionStrategy(self.strategy))
        object.__setattr__(self, "affinity_policy", NodeAffinityPolicy(self.affinity_policy))
        team = self.team_id or None
        if team is not None and not isinstance(team, str):
            raise RequestValidationError("team_id", "must be a string")
        object.__setattr__(self, "team_id", team)
        if self.affinity_policy.requires_team and team is None:
            raise RequestValidationError(
                "affinity_policy",
                f"{self.affinity_policy.value} requires a team (it places a team's members)",
            )
        if not isinstance(self.node_selector, Mapping):
            raise RequestValidationError("node_selector", "must be a mapping of label to value")
        if problem := label_count_error(self.node_selector, what="node_selector"):
            raise RequestValidationError("node_selector", problem)
        for key, value in self.node_selector.items():
            problem = label_key_error(key) or label_value_error(key, value)
            if problem:
                raise RequestValidationError("node_selector", problem)
        object.__setattr__(self, "node_selector", dict(self.node_selector))
        self._check_placement()

    def _check_placement(self) -> None:
        if self.node is None:
            object.__setattr__(self, "node", "")
        if self.node != "" and (problem := node_name_error(self.node)):
            raise RequestValidationError("node", f"node name {problem}")
        if not isinstance(self.prefer_labels, Mapping):
            raise RequestValidationError("prefer_labels", "must be a mapping of label to value")
        if problem := label_count_error(self.prefer_labels, what="prefer_labels"):
            raise RequestValidationError("prefer_labels", problem)
        for key, value in self.prefer_labels.items():
            problem = label_key_error(key) or label_value_error(key, value)
            if problem:
                raise RequestValidationError("prefer_labels", problem)
        object.__setattr__(self, "prefer_labels", dict(self.prefer_labels))
        if problem := names_error(self.capabilities, what="capabilities"):
            raise RequestValidationError("capabilities", problem)
        object.__setattr__(self, "capabilities", frozenset(self.capabilities))
        memory, cpu = self.min_free_memory_mb, self.max_cpu_percent
        if memory is not None and (
            isinstance(memory, bool)
            or not isinstance(memory, int)
            or not 0 <= memory <= MAX_FREE_MEMORY_MB
        ):
            raise RequestValidationError(
                "min_free_memory_mb", "must be a whole number of megabytes, at least 0"
            )
        if cpu is not None and (
            isinstance(cpu, bool) or not isinstance(cpu, int | float) or not 0 <= cpu <= 100
        ):
            raise RequestValidationError("max_cpu_percent", "must be a number from 0 to 100")
        if cpu is not None:
            object.__setattr__(self, "max_cpu_percent", float(cpu))
        if problem := model_name_error(self.model):
            raise RequestValidationError("model", problem)
        priority = self.priority
        if (
            isinstance(priority, bool)
            or not isinstance(priority, int)
            or abs(priority) > MAX_PRIORITY
        ):
            raise RequestValidationError(
                "priority", f"must be a whole number from -{MAX_PRIORITY} to {MAX_PRIORITY}"
            )
        for name, zero_ok, high in (("max_wait", True, MAX_WAIT), ("timeout", False, MAX_TIMEOUT)):
            value = getattr(self, name)
            if value is None:
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or not 0 <= value <= high
                or (value == 0 and not zero_ok)
            ):
                low = "from 0" if zero_ok else "above 0 and"
                raise RequestValidationError(
                    name, f"must be a number of seconds {low} up to {high:g}"
                )
            object.__setattr__(self, name, float(value))


@dataclass(frozen=True)
class ExecutionResult:
    """What an executor reports for one run.

    ``status`` is terminal for runs the executor carried to the end, or ``scheduled`` /
    ``running`` when the run was handed off (a remote node finishes it asynchronously).
    """

    session_id: str
    status: TaskStatus
    executor: str
    output: str = ""
    error: str = ""
    node: str | None = None
    fallback_reason: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    # What the run consumed, as its agent recorded it (AgentContext.record_usage).
    usage: Mapping[str, Any] = field(default_factory=dict)
