"""Hivemind's framework-free core: routing SubAgent runs to local execution or Golem nodes.

Nothing here imports Django; ``hivemind_web`` adapts this package to the database and network.
"""

from __future__ import annotations

from importlib import metadata

from executor_core.agents import (
    AgentContext,
    AgentRegistry,
    AgentRunner,
    default_registry,
)
from executor_core.executors import (
    Dispatcher,
    Executor,
    GolemExecutor,
    LocalExecutor,
    build_schedule_request,
)
from executor_core.index import NodeTaskIndex
from executor_core.observer import NullObserver, Observer, RecordingObserver
from executor_core.router import ExecutionRouter, RouteDecision
from executor_core.scheduling.types import SchedulingError
from executor_core.types import (
    AgentFailure,
    AtCapacityError,
    DispatchError,
    ExecuteRequest,
    ExecutionCancelled,
    ExecutionResult,
    ExecutionStrategy,
    ExecutorError,
    NodeAffinityPolicy,
    RequestValidationError,
    TaskStatus,
    UnknownAgentError,
    UnregisteredStrategyError,
)

try:
    __version__ = metadata.version("hivemind")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "AgentContext",
    "AgentFailure",
    "AgentRegistry",
    "AgentRunner",
    "AtCapacityError",
    "DispatchError",
    "Dispatcher",
    "ExecuteRequest",
    "ExecutionCancelled",
    "ExecutionResult",
    "ExecutionRouter",
    "ExecutionStrategy",
    "Executor",
    "ExecutorError",
    "GolemExecutor",
    "LocalExecutor",
    "NodeAffinityPolicy",
    "NodeTaskIndex",
    "NullObserver",
    "Observer",
    "RecordingObserver",
    "RequestValidationError",
    "RouteDecision",
    "SchedulingError",
    "TaskStatus",
    "UnknownAgentError",
    "UnregisteredStrategyError",
    "__version__",
    "build_schedule_request",
    "default_registry",
]
