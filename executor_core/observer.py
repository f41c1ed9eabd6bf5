"""Routing, scheduling, fallback and run events, for the hub's board and for debugging.

Every method is synchronous and must not block: the hub's implementation only enqueues. The
executors call observers through :func:`guarded`, so a failing observer is logged and ignored
rather than failing the run it reports on.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from executor_core.scheduling.types import Placement
    from executor_core.types import ExecuteRequest, ExecutionResult, ExecutionStrategy

logger = logging.getLogger(__name__)


class Observer(Protocol):
    def on_route(self, request: ExecuteRequest, strategy: ExecutionStrategy, reason: str) -> None:
        """The router chose ``strategy`` (local or golem) for the request."""

    def on_schedule(self, request: ExecuteRequest, placement: Placement) -> None:
        """The scheduler placed the request on a node."""

    def on_fallback(self, request: ExecuteRequest, reason: str) -> None:
        """A scheduling-phase failure sends the request to the local executor."""

    def on_started(self, request: ExecuteRequest, executor_name: str) -> None:
        """The run actually started (it got a slot)."""

    def on_progress(self, session_id: str, pct: float, message: str) -> None: ...

    def on_log(self, session_id: str, lines: list[str]) -> None: ...

    def on_finished(self, result: ExecutionResult) -> None:
        """The run reached a terminal status."""


class NullObserver:
    """Ignores every event; subclass it and override only what you need."""

    def on_route(self, request: ExecuteRequest, strategy: ExecutionStrategy, reason: str) -> None:
        pass

    def on_schedule(self, request: ExecuteRequest, placement: Placement) -> None:
        pass

    def on_fallback(self, request: ExecuteRequest, reason: str) -> None:
        pass

    def on_started(self, request: ExecuteRequest, executor_name: str) -> None:
        pass

    def on_progress(self, session_id: str, pct: float, message: str) -> None:
        pass

    def on_log(self, session_id: str, lines: list[str]) -> None:
        pass

    def on_finished(self, result: ExecutionResult) -> None:
        pass


class RecordingObserver:
    """Keeps every event as ``(event name without "on_", payload dict)``, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def of(self, event: str) -> list[dict[str, Any]]:
        """The payloads of one kind of event, e.g. ``of("fallback")``."""
        return [payload for name, payload in self.events if name == event]

    def clear(self) -> None:
        self.events.clear()

    def on_route(self, request: ExecuteRequest, strategy: ExecutionStrategy, reason: str) -> None:
        self.events.append(("route", {"request": request, "strategy": strategy, "reason": reason}))

    def on_schedule(self, request: ExecuteRequest, placement: Placement) -> None:
        self.events.append(("schedule", {"request": request, "placement": placement}))

    def on_fallback(self, request: ExecuteRequest, reason: str) -> None:
        self.events.append(("fallback", {"request": request, "reason": reason}))

    def on_started(self, request: ExecuteRequest, executor_name: str) -> None:
        self.events.append(("started", {"request": request, "executor": executor_name}))

    def on_progress(self, session_id: str, pct: float, message: str) -> None:
        self.events.append(("progress", {"session_id": session_id, "pct": pct, "message": message}))

    def on_log(self, session_id: str, lines: list[str]) -> None:
        self.events.append(("log", {"session_id": session_id, "lines": list(lines)}))

    def on_finished(self, result: ExecutionResult) -> None:
        self.events.append(("finished", {"result": result}))


class _Guarded:
    """Forwards to an observer, logging (not raising) its errors; tolerates missing methods."""

    def __init__(self, inner: object) -> None:
        self.inner = inner

    def _call(self, method: str, *args: Any) -> None:
        handler = getattr(self.inner, method, None)
        if handler is None:
            return
        try:
            handler(*args)
        except Exception:
            logger.exception("observer %s.%s failed", type(self.inner).__name__, method)

    def on_route(self, request: ExecuteRequest, strategy: ExecutionStrategy, reason: str) -> None:
        self._call("on_route", request, strategy, reason)

    def on_schedule(self, request: ExecuteRequest, placement: Placement) -> None:
        self._call("on_schedule", request, placement)

    def on_fallback(self, request: ExecuteRequest, reason: str) -> None:
        self._call("on_fallback", request, reason)

    def on_started(self, request: ExecuteRequest, executor_name: str) -> None:
        self._call("on_started", request, executor_name)

    def on_progress(self, session_id: str, pct: float, message: str) -> None:
        self._call("on_progress", session_id, pct, message)

    def on_log(self, session_id: str, lines: list[str]) -> None:
        self._call("on_log", session_id, lines)

    def on_finished(self, result: ExecutionResult) -> None:
        self._call("on_finished", result)


def guarded(observer: Observer | None) -> Observer:
    """``observer`` wrapped so its failures are logged, or a NullObserver when None."""
    if observer is None:
        return NullObserver()
    if isinstance(observer, _Guarded):
        return observer
    return _Guarded(observer)
