from __future__ import annotations

import inspect

import pytest

from executor_core import (
    ExecuteRequest,
    ExecutionResult,
    ExecutionStrategy,
    NullObserver,
    Observer,
    RecordingObserver,
    TaskStatus,
)
from executor_core.observer import guarded
from executor_core.scheduling.types import Placement

REQUEST = ExecuteRequest("echo", "s-1", "hi")
RESULT = ExecutionResult("s-1", TaskStatus.SUCCEEDED, "local", output="hi")
EVENTS = [
    ("on_route", (REQUEST, ExecutionStrategy.LOCAL, "requested local")),
    ("on_schedule", (REQUEST, Placement("n1", 90.0, "least loaded"))),
    ("on_fallback", (REQUEST, "scheduling failed: no nodes")),
    ("on_started", (REQUEST, "local")),
    ("on_progress", ("s-1", 50.0, "half")),
    ("on_log", ("s-1", ["line"])),
    ("on_finished", (RESULT,)),
]
PROTOCOL_METHODS = sorted(
    name for name, _ in inspect.getmembers(Observer, inspect.isfunction) if name.startswith("on_")
)


def emit_all(observer: Observer) -> None:
    for method, args in EVENTS:
        getattr(observer, method)(*args)


@pytest.mark.parametrize("cls", [NullObserver, RecordingObserver])
def test_the_stock_observers_implement_every_protocol_method(cls):
    assert sorted(name for name, _ in EVENTS) == PROTOCOL_METHODS
    for name in PROTOCOL_METHODS:
        assert callable(getattr(cls, name))


def test_the_null_observer_ignores_everything():
    emit_all(NullObserver())


def test_the_recording_observer_keeps_events_in_order_with_their_payloads():
    observer = RecordingObserver()

    emit_all(observer)

    assert observer.names() == [m.removeprefix("on_") for m, _ in EVENTS]
    assert observer.of("fallback") == [
        {"request": REQUEST, "reason": "scheduling failed: no nodes"}
    ]
    assert observer.of("progress") == [{"session_id": "s-1", "pct": 50.0, "message": "half"}]
    assert observer.of("finished") == [{"result": RESULT}]
    observer.clear()
    assert observer.events == []


def test_a_guarded_observer_logs_errors_instead_of_raising(caplog):
    class Broken(NullObserver):
        def on_finished(self, result):
            raise RuntimeError("queue closed")

    guarded(Broken()).on_finished(RESULT)

    assert "queue closed" in caplog.text


def test_a_guarded_observer_tolerates_missing_methods():
    class OnlyRoutes:
        def __init__(self):
            self.seen = []

        def on_route(self, request, strategy, reason):
            self.seen.append(reason)

    inner = OnlyRoutes()
    observer = guarded(inner)

    emit_all(observer)

    assert inner.seen == ["requested local"]
