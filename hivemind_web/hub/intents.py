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

    @classmethod
    def of(cls, task: Any) -> AttemptSpec:
        """The spec of a task row's current attempt (``team`` selected or cheap to read)."""
        return cls(
            session_id=str(task.session_id),
            attempt=task.attempts,
            agent_id=task.agent_id,
            input=task.input,
            strategy=task.strategy,
            team=task.team.name if task.team_id else None,
            node_selector=dict(task.node_selector),
            affinity=task.affinity,
            force_local=task.force_local,
            fallback_reason=task.fallback_reason,
            excluded_nodes=tuple(task.excluded_nodes),
        )


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
