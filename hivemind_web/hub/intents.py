"""What services announce must happen after a commit, and the port the runtime fills in.

Services write the database and never import the runtime (dependencies point down, DESIGN
§10). What must follow a commit (start or stop an attempt, configure a node, tell the scheduler
a slot is free) is announced here; the hub runtime installs itself as the ``RuntimePort``
when it starts. A process without a runtime (a management command, a unit test) keeps the
announcements to itself: a pending attempt nobody started is picked up by a running hub's
reaper, which routes unclaimed pending tasks.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.conf import settings
from django.db import transaction


@dataclass(frozen=True)
class AttemptSpec:
    """Everything the runtime needs to route one attempt, so it never re-reads the task."""

    session_id: str
    attempt: int
    agent_id: str
    input: str
    strategy: str
    team: str | None = None
    node_selector: dict[str, str] = field(default_factory=dict)
    affinity: str = "none"
    force_local: bool = False
    fallback_reason: str = ""
    excluded_nodes: tuple[str, ...] = ()
    node: str = ""
    prefer_labels: dict[str, str] = field(default_factory=dict)
    capabilities: tuple[str, ...] = ()
    resources: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    priority: int = 0
    # Resolved: the task's, else its team's, else HIVEMIND_SCHEDULE_WAIT.
    max_wait: float = 0.0
    timeout: float | None = None

    @classmethod
    def of(cls, task: Any, *, with_input: bool = True) -> AttemptSpec:
        """The spec of a task row's current attempt (``team`` selected or cheap to read;
        without its input when the row was read without it)."""
        return cls(
            session_id=str(task.session_id),
            attempt=task.attempts,
            agent_id=task.agent_id,
            input=task.input if with_input else "",
            strategy=task.strategy,
            team=task.team.name if task.team_id else None,
            node_selector=dict(task.node_selector),
            affinity=task.affinity,
            force_local=task.force_local,
            fallback_reason=task.fallback_reason,
            excluded_nodes=tuple(task.excluded_nodes),
            node=task.pinned_node,
            prefer_labels=dict(task.prefer_labels),
            capabilities=tuple(task.capabilities),
            resources=dict(task.resources),
            model=task.model,
            priority=task.priority,
            max_wait=max_wait_of(task),
            timeout=task.timeout,
        )


def max_wait_of(task: Any) -> float:
    """How long the task may wait for a node: its own figure, its team's, or the hub's."""
    if task.max_wait is not None:
        return task.max_wait
    if task.team_id and task.team.max_wait is not None:
        return task.team.max_wait
    return settings.HIVEMIND["SCHEDULE_WAIT"]


class RuntimePort(Protocol):
    """Implemented by the hub runtime. Every method is safe to call from any thread."""

    def start_attempt(self, spec: AttemptSpec) -> None: ...

    def stop_attempt(self, session_id: str, node: str | None) -> None: ...

    def attempt_ended(self, session_id: str) -> None: ...

    def configure_node(self, node: str, config: dict[str, Any]) -> None: ...

    def nodes_changed(self) -> None: ...

    def fallback_mode_changed(self, enabled: bool) -> None: ...

    def local_capacity_refusal(self, extra: int = 0) -> str: ...


class _NoRuntime:
    """The port of a process that runs no hub runtime: nothing follows a commit here."""

    def start_attempt(self, spec: AttemptSpec) -> None:
        pass

    def stop_attempt(self, session_id: str, node: str | None) -> None:
        pass

    def attempt_ended(self, session_id: str) -> None:
        pass

    def configure_node(self, node: str, config: dict[str, Any]) -> None:
        pass

    def nodes_changed(self) -> None:
        pass

    def fallback_mode_changed(self, enabled: bool) -> None:
        pass

    def local_capacity_refusal(self, extra: int = 0) -> str:
        return ""


NO_RUNTIME = _NoRuntime()
_lock = threading.Lock()
_port: RuntimePort = NO_RUNTIME


def install(port: RuntimePort) -> None:
    global _port
    with _lock:
        _port = port


def uninstall(port: RuntimePort | None = None) -> None:
    """Back to no runtime (only if ``port`` is still the installed one, when given)."""
    global _port
    with _lock:
        if port is None or _port is port:
            _port = NO_RUNTIME


def port() -> RuntimePort:
    return _port


def start_attempt(spec: AttemptSpec) -> None:
    transaction.on_commit(lambda: _port.start_attempt(spec))


def stop_attempt(session_id: str, node: str | None) -> None:
    transaction.on_commit(lambda: _port.stop_attempt(session_id, node))


def attempt_ended(session_id: str) -> None:
    transaction.on_commit(lambda: _port.attempt_ended(session_id))


def configure_node(node: str, config: dict[str, Any]) -> None:
    """Send the node process its new node.config (cordon, drain, capacity, labels)."""
    transaction.on_commit(lambda: _port.configure_node(node, config))


def nodes_changed() -> None:
    transaction.on_commit(lambda: _port.nodes_changed())


def fallback_mode_changed(enabled: bool) -> None:
    transaction.on_commit(lambda: _port.fallback_mode_changed(enabled))
