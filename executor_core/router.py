"""ExecutionRouter: picks the executor for a request from its strategy (DESIGN §1)."""

from __future__ import annotations

from dataclasses import dataclass

from executor_core.executors import Executor
from executor_core.observer import Observer, guarded
from executor_core.types import ExecuteRequest, ExecutionStrategy, UnregisteredStrategyError

ERR_REGISTER_AUTO = "cannot register an executor for 'auto': auto chooses between local and golem"
ERR_UNREGISTERED = "no executor registered for strategy {strategy!r} (registered: {registered})"
REASON_REQUESTED = "requested {strategy}"
REASON_NO_GOLEM = "auto: no golem executor registered"
REASON_GOLEM_UNREGISTERED = "no golem executor registered: running locally"
REASON_GOLEM_FALLBACK = "golem: " + REASON_GOLEM_UNREGISTERED
REASON_NO_LOCAL = "auto: no local executor registered"
REASON_NO_NODE = "auto: no feasible golem node (local load {local:.2f})"
REASON_LOCAL = "auto: local load {local:.2f} < best node load {node:.2f}"
REASON_TIE = "auto: local load {local:.2f} = best node load {node:.2f}, ties go local"
REASON_GOLEM = "auto: best node load {node:.2f} < local load {local:.2f}"


@dataclass(frozen=True)
class RouteDecision:
    executor: Executor
    strategy: ExecutionStrategy  # the effective one: local or golem, never auto
    reason: str


class ExecutionRouter:
    def __init__(self, observer: Observer | None = None) -> None:
        self._executors: dict[ExecutionStrategy, Executor] = {}
        self._observer = guarded(observer)

    def register_executor(self, strategy: ExecutionStrategy | str, executor: Executor) -> None:
        """Register the executor for ``local`` or ``golem`` (replacing any earlier one)."""
        if not ExecutionStrategy.is_valid(strategy):
            raise ValueError(f"unknown strategy {strategy!r}")
        strategy = ExecutionStrategy(strategy)
        if strategy is ExecutionStrategy.AUTO:
            raise ValueError(ERR_REGISTER_AUTO)
        self._executors[strategy] = executor

    def executor_for(self, strategy: ExecutionStrategy | str) -> Executor | None:
        return self._executors.get(ExecutionStrategy(strategy))

    async def route(self, request: ExecuteRequest) -> tuple[Executor, ExecutionStrategy]:
        decision = await self.decide(request)
        return decision.executor, decision.strategy

    async def decide(self, request: ExecuteRequest) -> RouteDecision:
        if request.strategy is ExecutionStrategy.AUTO:
            decision = await self._decide_auto(request)
        elif request.strategy is ExecutionStrategy.GOLEM and self._falls_back_to_local():
            # As the Go router: a golem request without a golem executor runs locally.
            self._observer.on_fallback(request, REASON_GOLEM_UNREGISTERED)
            decision = RouteDecision(
                self._executors[ExecutionStrategy.LOCAL],
                ExecutionStrategy.LOCAL,
                REASON_GOLEM_FALLBACK,
            )
        else:
            decision = RouteDecision(
                self._require(request.strategy),
                request.strategy,
                REASON_REQUESTED.format(strategy=request.strategy.value),
            )
        self._observer.on_route(request, decision.strategy, decision.reason)
        return decision

    async def _decide_auto(self, request: ExecuteRequest) -> RouteDecision:
        local = self._executors.get(ExecutionStrategy.LOCAL)
        golem = self._executors.get(ExecutionStrategy.GOLEM)
        if local is None and golem is None:
            raise UnregisteredStrategyError(self._unregistered(ExecutionStrategy.AUTO))
        if golem is None:
            return RouteDecision(local, ExecutionStrategy.LOCAL, REASON_NO_GOLEM)
        if local is None:
            return RouteDecision(golem, ExecutionStrategy.GOLEM, REASON_NO_LOCAL)
        local_load = _load_fraction(local)
        best_node_load = getattr(golem, "best_node_load", None)
        node_load = await best_node_load(request) if best_node_load is not None else None
        if node_load is None:
            reason = REASON_NO_NODE.format(local=local_load)
            return RouteDecision(local, ExecutionStrategy.LOCAL, reason)
        loads = {"local": local_load, "node": node_load}
        if local_load < node_load:
            return RouteDecision(local, ExecutionStrategy.LOCAL, REASON_LOCAL.format(**loads))
        if local_load == node_load:
            return RouteDecision(local, ExecutionStrategy.LOCAL, REASON_TIE.format(**loads))
        return RouteDecision(golem, ExecutionStrategy.GOLEM, REASON_GOLEM.format(**loads))

    def _falls_back_to_local(self) -> bool:
        registered = self._executors
        return ExecutionStrategy.GOLEM not in registered and ExecutionStrategy.LOCAL in registered

    def _require(self, strategy: ExecutionStrategy) -> Executor:
        executor = self._executors.get(strategy)
        if executor is None:
            raise UnregisteredStrategyError(self._unregistered(strategy))
        return executor

    def _unregistered(self, strategy: ExecutionStrategy) -> str:
        registered = ", ".join(s.value for s in self._executors) or "none"
        return ERR_UNREGISTERED.format(strategy=strategy.value, registered=registered)


def _load_fraction(executor: Executor) -> float:
    # An executor that cannot tell its load is taken as idle: auto then prefers local.
    load_fraction = getattr(executor, "load_fraction", None)
    return float(load_fraction()) if load_fraction is not None else 0.0
