"""ExecutionRouter: explicit strategies, unregistered ones, and ``auto`` by load (DESIGN §1)."""

from __future__ import annotations

import re

import pytest

from executor_core import (
    ExecuteRequest,
    ExecutionResult,
    ExecutionRouter,
    ExecutionStrategy,
    GolemExecutor,
    LocalExecutor,
    RecordingObserver,
    RouteDecision,
    TaskStatus,
    UnregisteredStrategyError,
    default_registry,
)
from executor_core.scheduling.types import Placement, ScheduleRequest

LOCAL, GOLEM = ExecutionStrategy.LOCAL, ExecutionStrategy.GOLEM


class FakeLocal:
    name = "local"

    def __init__(self, load: float = 0.0) -> None:
        self.load = load

    def load_fraction(self) -> float:
        return self.load

    async def execute(self, request: ExecuteRequest) -> ExecutionResult:
        return ExecutionResult(request.session_id, TaskStatus.SUCCEEDED, self.name)


class FakeGolem:
    name = "golem"

    def __init__(self, best: float | None = None) -> None:
        self.best = best
        self.asked: list[ExecuteRequest] = []

    async def best_node_load(self, request: ExecuteRequest) -> float | None:
        self.asked.append(request)
        return self.best

    async def execute(self, request: ExecuteRequest) -> ExecutionResult:
        return ExecutionResult(request.session_id, TaskStatus.SCHEDULED, self.name, node="n1")


def req(strategy: str | None) -> ExecuteRequest:
    return ExecuteRequest("echo", "s1", "hi", strategy=strategy)


def router_with(local=None, golem=None, observer=None) -> ExecutionRouter:
    router = ExecutionRouter(observer)
    if local is not None:
        router.register_executor("local", local)
    if golem is not None:
        router.register_executor(GOLEM, golem)
    return router


@pytest.mark.parametrize(("strategy", "expected"), [("local", LOCAL), ("golem", GOLEM)])
async def test_an_explicit_strategy_takes_its_registered_executor(strategy, expected):
    local, golem = FakeLocal(load=9.0), FakeGolem(best=0.0)
    router = router_with(local, golem)

    executor, effective = await router.route(req(strategy))

    assert effective is expected
    assert executor is (local if expected is LOCAL else golem)
    assert golem.asked == []  # no load comparison for an explicit strategy


@pytest.mark.parametrize(
    ("registered", "strategy", "message"),
    [
        ({}, "local", "no executor registered for strategy 'local' (registered: none)"),
        ({}, "golem", "no executor registered for strategy 'golem' (registered: none)"),
        ({"golem": FakeGolem()}, "local", "strategy 'local' (registered: golem)"),
        ({}, "auto", "no executor registered for strategy 'auto' (registered: none)"),
    ],
)
async def test_an_unregistered_strategy_is_a_clear_error(registered, strategy, message):
    router = ExecutionRouter()
    for name, executor in registered.items():
        router.register_executor(name, executor)

    with pytest.raises(UnregisteredStrategyError, match=re.escape(message)):
        await router.route(req(strategy))


@pytest.mark.parametrize(
    ("strategy", "message"),
    [("auto", "cannot register an executor for 'auto'"), ("fast", "unknown strategy 'fast'")],
)
def test_only_local_and_golem_can_be_registered(strategy, message):
    with pytest.raises(ValueError, match=message):
        ExecutionRouter().register_executor(strategy, FakeLocal())


@pytest.mark.parametrize(
    ("local_load", "best_node_load", "expected", "reason"),
    [
        (0.5, 0.75, LOCAL, "auto: local load 0.50 < best node load 0.75"),
        (0.5, 0.5, LOCAL, "auto: local load 0.50 = best node load 0.50, ties go local"),
        (0.0, 0.0, LOCAL, "auto: local load 0.00 = best node load 0.00, ties go local"),
        (0.75, 0.25, GOLEM, "auto: best node load 0.25 < local load 0.75"),
        (2.5, 0.9, GOLEM, "auto: best node load 0.90 < local load 2.50"),
        (3.0, None, LOCAL, "auto: no feasible golem node (local load 3.00)"),
    ],
)
async def test_auto_takes_the_less_loaded_side(local_load, best_node_load, expected, reason):
    local, golem = FakeLocal(local_load), FakeGolem(best_node_load)
    observer = RecordingObserver()
    router = router_with(local, golem, observer)
    request = req("auto")

    decision = await router.decide(request)

    assert decision == RouteDecision(local if expected is LOCAL else golem, expected, reason)
    assert golem.asked == [request]
    assert observer.events == [
        ("route", {"request": request, "strategy": expected, "reason": reason})
    ]


@pytest.mark.parametrize(
    ("local", "golem", "expected", "reason"),
    [
        (FakeLocal(5.0), None, LOCAL, "auto: no golem executor registered"),
        (None, FakeGolem(0.1), GOLEM, "auto: no local executor registered"),
    ],
)
async def test_auto_uses_the_only_registered_side(local, golem, expected, reason):
    decision = await router_with(local, golem).decide(req("auto"))

    assert (decision.strategy, decision.reason) == (expected, reason)


@pytest.mark.parametrize(
    ("strategy", "reason", "fallbacks"),
    [
        ("golem", "golem: no golem executor registered: running locally", 1),
        ("auto", "auto: no golem executor registered", 0),
        ("local", "requested local", 0),
        ("", "requested local", 0),
        (None, "requested local", 0),
    ],
)
async def test_without_a_golem_executor_every_strategy_runs_locally(strategy, reason, fallbacks):
    local, observer = FakeLocal(), RecordingObserver()
    router = router_with(local, observer=observer)
    request = req(strategy)

    decision = await router.decide(request)

    assert decision == RouteDecision(local, LOCAL, reason)
    fallback = (
        "fallback",
        {"request": request, "reason": "no golem executor registered: running locally"},
    )
    assert observer.events == [fallback] * fallbacks + [
        ("route", {"request": request, "strategy": LOCAL, "reason": reason})
    ]


@pytest.mark.parametrize(
    ("strategy", "expected"), [("golem", GOLEM), ("local", LOCAL), ("", LOCAL)]
)
async def test_with_both_executors_no_strategy_falls_back(strategy, expected):
    observer = RecordingObserver()
    router = router_with(FakeLocal(), FakeGolem(), observer)

    decision = await router.decide(req(strategy))

    assert decision.strategy is expected
    assert observer.names() == ["route"]


async def test_a_golem_request_without_golem_runs_on_the_real_local_executor():
    local = LocalExecutor(default_registry(entry_points=False), concurrency=1)
    router = router_with(local)

    executor, effective = await router.route(req("golem"))

    assert (executor, effective) == (local, LOCAL)
    result = await executor.execute(req("golem"))
    assert (result.status, result.output) == (TaskStatus.SUCCEEDED, "hi")


async def test_an_explicit_route_is_reported_to_the_observer():
    observer = RecordingObserver()
    router = router_with(FakeLocal(), observer=observer)

    await router.route(req("local"))

    assert observer.of("route")[0]["reason"] == "requested local"
    assert observer.of("route")[0]["strategy"] is LOCAL


async def test_auto_with_the_real_executors_compares_queue_and_node_load():
    class Scheduler:
        async def schedule(self, request: ScheduleRequest) -> Placement:
            return Placement("n1", 100.0, "least loaded")

        async def estimate(self, request: ScheduleRequest) -> float | None:
            return 0.25

    local = LocalExecutor(default_registry(entry_points=False), concurrency=2)
    golem = GolemExecutor(Scheduler(), local)
    router = router_with(local, golem)

    decision = await router.decide(req("auto"))

    assert (decision.executor, decision.strategy) == (local, LOCAL)
    assert decision.reason == "auto: local load 0.00 < best node load 0.25"
    result = await decision.executor.execute(req("auto"))
    assert (result.status, result.output) == (TaskStatus.SUCCEEDED, "hi")
