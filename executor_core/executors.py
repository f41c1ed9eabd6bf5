"""Executors: where a routed request actually runs.

``LocalExecutor`` runs agents on the caller's event loop behind a bounded queue.
``GolemExecutor`` places a request on a remote node with the scheduler and hands it to a
dispatcher; a scheduling-phase failure falls back to local, an execution-phase failure is
reported and left to the team orchestrator (DESIGN §1).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from executor_core.agents import AgentContext, AgentRegistry, AgentRunner
from executor_core.index import NodeTaskIndex
from executor_core.observer import Observer, guarded
from executor_core.scheduling.types import (
    Placement,
    ScheduleHints,
    Scheduler,
    ScheduleRequest,
    SchedulingError,
)
from executor_core.types import (
    AtCapacityError,
    DispatchError,
    ExecuteRequest,
    ExecutionCancelled,
    ExecutionResult,
    ExecutorError,
    TaskStatus,
    UnknownAgentError,
)

logger = logging.getLogger(__name__)

ERR_AT_CAPACITY = "local executor at capacity: {queued} queued (limit {limit})"
ERR_DUPLICATE_SESSION = "session {session_id!r} is already queued or running locally"
ERR_NOT_A_STRING = "agent {agent_id!r} returned {type}, expected str"
ERR_CANCELLED = "cancelled"
FALLBACK_SCHEDULING = "scheduling failed: {reason}"
FALLBACK_DISPATCH = "node {node} did not accept the task: {reason}"
WITHDRAWN = "withdrawn"  # a queued local run taken out to run elsewhere

__all__ = [
    "DispatchError",
    "Dispatcher",
    "ExecutionFailureHook",
    "Executor",
    "GolemExecutor",
    "LocalExecutor",
    "WaitQueue",
    "build_schedule_request",
]


class Executor(Protocol):
    name: str

    async def execute(self, request: ExecuteRequest) -> ExecutionResult: ...


class Dispatcher(Protocol):
    """Hands a placed request to its node. Raises DispatchError when the node did not accept."""

    async def dispatch(self, placement: Placement, request: ExecuteRequest) -> ExecutionResult: ...


class WaitQueue(Protocol):
    """Where a request no node can take now may wait for one (DESIGN §11).

    ``park`` returns the (non-terminal) result of a request left waiting, or None when it
    must fall back now: waiting cannot help, the request may not wait, or its time is up.
    """

    async def park(
        self, request: ExecuteRequest, error: SchedulingError
    ) -> ExecutionResult | None: ...


# The team orchestrator's say on an execution-phase failure; may be sync or async.
ExecutionFailureHook = Callable[[ExecuteRequest, ExecutionResult], Awaitable[None] | None]


def describe_exception(exc: BaseException) -> str:
    """A task's error text: the message, or the exception type when the message is empty."""
    return str(exc) or type(exc).__name__


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


# --------------------------------------------------------------------------------------------
# Local


@dataclasses.dataclass
class _LocalRun:
    request: ExecuteRequest
    ctx: AgentContext
    # Set while queued: True = go, False = cancelled, WITHDRAWN = it runs elsewhere.
    slot: asyncio.Future[Any] | None = None
    task: asyncio.Task[Any] | None = None


class LocalExecutor:
    """Runs agents on the caller's event loop, ``concurrency`` at a time.

    Requests beyond that wait in a FIFO queue of at most ``queue_limit``; past it, ``execute``
    refuses at once with AtCapacityError (DESIGN §4: refused, never silently dropped). All
    methods must be called from the loop's thread.
    """

    name = "local"

    def __init__(
        self,
        agent_runner: AgentRunner,
        concurrency: int = 4,
        queue_limit: int = 1000,
        *,
        observer: Observer | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if queue_limit < 0:
            raise ValueError(f"queue_limit must not be negative, got {queue_limit}")
        self._runner = agent_runner
        self._concurrency = concurrency
        self._queue_limit = queue_limit
        self._observer = guarded(observer)
        self._running: dict[str, _LocalRun] = {}  # holds a slot
        self._queued: dict[str, _LocalRun] = {}  # waits for a slot, in arrival order

    @property
    def concurrency(self) -> int:
        return self._concurrency

    @property
    def queue_limit(self) -> int:
        return self._queue_limit

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def queued(self) -> int:
        return len(self._queued)

    def load_fraction(self) -> float:
        """(running + queued) / concurrency: above 1.0 once requests queue."""
        return (len(self._running) + len(self._queued)) / self._concurrency

    async def execute(self, request: ExecuteRequest) -> ExecutionResult:
        sid = request.session_id
        if sid in self._running or sid in self._queued:
            raise ExecutorError(ERR_DUPLICATE_SESSION.format(session_id=sid))
        if isinstance(self._runner, AgentRegistry) and request.agent_id not in self._runner:
            # Refuse before taking a slot: nothing would run.
            error = str(UnknownAgentError(request.agent_id, self._runner.names()))
            return self._finish(self._result(request, TaskStatus.FAILED, error=error))
        run = _LocalRun(request, self._context(request))
        if len(self._running) < self._concurrency:
            self._running[sid] = run
        else:
            slot = await self._wait_for_slot(run)
            if slot is WITHDRAWN:
                return self._result(request, TaskStatus.PENDING, details={"withdrawn": True})
            if not slot:
                return self._finish(self._cancelled(request))
        return await self._run(run)

    def is_queued(self, session_id: str) -> bool:
        """True while the run waits for a slot (it has not started)."""
        return session_id in self._queued

    def withdraw(self, session_id: str) -> bool:
        """Take a run that has not started out of the queue, to run elsewhere: its
        ``execute`` returns a ``pending`` result. False when it is not queued here."""
        run = self._queued.pop(session_id, None)
        if run is None or run.slot is None or run.slot.done():
            return False
        run.slot.set_result(WITHDRAWN)
        return True

    def cancel(self, session_id: str) -> bool:
        """Cancel a queued or running run; False when the session is not here."""
        run = self._queued.pop(session_id, None)
        if run is not None:
            run.ctx.cancel()
            if run.slot is not None and not run.slot.done():
                run.slot.set_result(False)
            return True
        run = self._running.get(session_id)
        if run is None:
            return False
        run.ctx.cancel()
        if run.task is not None:
            run.task.cancel()
        return True

    def cancel_all(self) -> int:
        """Cancel every queued and running run (the host is stopping); how many there were."""
        sessions = [*self._queued, *self._running]
        for session_id in sessions:
            self.cancel(session_id)
        return len(sessions)

    def _context(self, request: ExecuteRequest) -> AgentContext:
        sid, observer = request.session_id, self._observer
        return AgentContext(
            request.agent_id,
            sid,
            model=request.model,
            on_progress=lambda pct, message: observer.on_progress(sid, pct, message),
            on_log=lambda lines: observer.on_log(sid, lines),
        )

    async def _wait_for_slot(self, run: _LocalRun) -> Any:
        """Queue ``run`` until a slot is handed over (True), it is cancelled (False) or
        withdrawn (WITHDRAWN)."""
        if len(self._queued) >= self._queue_limit:
            raise AtCapacityError(
                ERR_AT_CAPACITY.format(queued=len(self._queued), limit=self._queue_limit)
            )
        sid = run.request.session_id
        run.slot = asyncio.get_running_loop().create_future()
        self._queued[sid] = run
        try:
            return await run.slot
        except asyncio.CancelledError:
            # The caller gave up while queued; a slot handed over meanwhile is passed on.
            if self._queued.pop(sid, None) is None and self._running.pop(sid, None) is not None:
                self._release_slot()
            self._finish(self._cancelled(run.request))
            raise

    async def _run(self, run: _LocalRun) -> ExecutionResult:
        request, ctx = run.request, run.ctx
        try:
            if ctx.cancelled:  # cancelled between getting its slot and starting
                return self._finish(self._cancelled(request))
            self._observer.on_started(request, self.name)
            run.task = asyncio.create_task(
                self._runner.run(request.input, ctx), name=f"agent:{request.session_id}"
            )
            try:
                output = await run.task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    # Our caller was cancelled (awaiting the task cancelled it too).
                    self._finish(self._cancelled(request))
                    raise
                result = self._cancelled(request)
            except ExecutionCancelled:
                result = self._cancelled(request)
            except Exception as exc:
                result = self._result(request, TaskStatus.FAILED, error=describe_exception(exc))
            else:
                result = self._completed(request, output)
            if ctx.usage:
                result = dataclasses.replace(result, usage=ctx.usage)
            return self._finish(result)
        finally:
            self._running.pop(request.session_id, None)
            self._release_slot()

    def _completed(self, request: ExecuteRequest, output: object) -> ExecutionResult:
        if not isinstance(output, str):
            error = ERR_NOT_A_STRING.format(agent_id=request.agent_id, type=type(output).__name__)
            return self._result(request, TaskStatus.FAILED, error=error)
        return self._result(request, TaskStatus.SUCCEEDED, output=output)

    def _release_slot(self) -> None:
        """Hand a free slot to the oldest queued run."""
        while self._queued and len(self._running) < self._concurrency:
            sid = next(iter(self._queued))
            run = self._queued.pop(sid)
            if run.slot is None or run.slot.done():
                continue
            self._running[sid] = run
            run.slot.set_result(True)

    def _result(
        self, request: ExecuteRequest, status: TaskStatus, **fields: Any
    ) -> ExecutionResult:
        return ExecutionResult(request.session_id, status, self.name, **fields)

    def _cancelled(self, request: ExecuteRequest) -> ExecutionResult:
        return self._result(request, TaskStatus.CANCELLED, error=ERR_CANCELLED)

    def _finish(self, result: ExecutionResult) -> ExecutionResult:
        self._observer.on_finished(result)
        return result


# --------------------------------------------------------------------------------------------
# Golem


def build_schedule_request(
    request: ExecuteRequest, index: NodeTaskIndex | None = None
) -> ScheduleRequest:
    """Steps 1-2 of the Go flow: the schedule request with the affinity policy as hints.

    ``team_nodes`` counts the team's active tasks per node from the index, leaving out the
    request's own session (a re-placed task is not its own team mate).
    """
    team_nodes: dict[str, int] = {}
    if index is not None and request.team_id:
        team_nodes = index.team_node_counts(request.team_id, exclude_session=request.session_id)
    return ScheduleRequest(
        session_id=request.session_id,
        agent_id=request.agent_id,
        team_id=request.team_id,
        node_selector=dict(request.node_selector),
        hints=ScheduleHints(
            affinity=request.affinity_policy,
            team_nodes=team_nodes,
            excluded_nodes=request.excluded_nodes,
        ),
        attempt=request.attempt,
        node=request.node,
        prefer_labels=dict(request.prefer_labels),
        capabilities=request.capabilities,
        min_free_memory_mb=request.min_free_memory_mb,
        max_cpu_percent=request.max_cpu_percent,
        model=request.model,
    )


class GolemExecutor:
    """Places requests on Golem nodes (N SubAgents : 1 node) and hands them over.

    Without a dispatcher the result is ``scheduled`` on the chosen node and the caller delivers
    it. With a wait queue, a request no node can take now may wait there instead of falling
    back; whoever places it later continues with ``hand_over``. Results that arrive later
    (the node reports asynchronously) go through ``report_result`` so the index and the
    failure hook stay in step.
    """

    name = "golem"

    def __init__(
        self,
        scheduler: Scheduler,
        local_fallback: Executor,
        observer: Observer | None = None,
        *,
        index: NodeTaskIndex | None = None,
        dispatcher: Dispatcher | None = None,
        on_execution_failure: ExecutionFailureHook | None = None,
        wait_queue: WaitQueue | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.wait_queue = wait_queue
        self.local_fallback = local_fallback
        self.index = index if index is not None else NodeTaskIndex()
        self.dispatcher = dispatcher
        self._observer = guarded(observer)
        self._on_execution_failure = on_execution_failure

    async def execute(self, request: ExecuteRequest) -> ExecutionResult:
        schedule_request = build_schedule_request(request, self.index)
        try:
            placement = await self.scheduler.schedule(schedule_request)
        except SchedulingError as exc:
            if self.wait_queue is not None:
                parked = await self.wait_queue.park(request, exc)
                if parked is not None:
                    return parked
            return await self._fall_back(request, FALLBACK_SCHEDULING.format(reason=exc.reason))
        return await self.hand_over(request, placement)

    async def hand_over(self, request: ExecuteRequest, placement: Placement) -> ExecutionResult:
        """The request is placed (and bound): hand it to its node."""
        self._observer.on_schedule(request, placement)
        self.index.add(placement.node, request.session_id, request.team_id)
        if self.dispatcher is None:
            details = {"score": placement.score, "reason": placement.reason}
            return ExecutionResult(
                request.session_id,
                TaskStatus.SCHEDULED,
                self.name,
                node=placement.node,
                details=details,
            )
        try:
            result = await self.dispatcher.dispatch(placement, request)
        except DispatchError as exc:
            reason = FALLBACK_DISPATCH.format(node=placement.node, reason=describe_exception(exc))
            return await self._fall_back(request, reason)
        except BaseException:
            # Not a known failure (or the caller was cancelled): undo the placement, re-raise.
            await self._forget(request.session_id)
            raise
        if result.node is None:
            result = dataclasses.replace(result, node=placement.node)
        if result.status is TaskStatus.RUNNING:  # the node accepted: the run has started
            self._observer.on_started(request, self.name)
        await self.report_result(request, result)
        return result

    async def report_result(self, request: ExecuteRequest, result: ExecutionResult) -> None:
        """Take a (possibly late) result: forget a finished task, hand failures to the hook."""
        if not result.status.is_terminal:
            return
        await self._forget(request.session_id)
        self._observer.on_finished(result)
        if result.status is TaskStatus.FAILED and self._on_execution_failure is not None:
            try:
                await _maybe_await(self._on_execution_failure(request, result))
            except Exception:
                logger.exception("execution failure hook failed for %s", request.session_id)

    async def best_node_load(self, request: ExecuteRequest) -> float | None:
        """Load of the node the scheduler would pick now, or None (no estimate, no node)."""
        estimate = getattr(self.scheduler, "estimate", None)
        if estimate is None:
            return None
        try:
            value = await _maybe_await(estimate(build_schedule_request(request, self.index)))
        except SchedulingError:
            return None
        if value is None:
            return None
        return float(getattr(value, "load", value))

    async def _fall_back(self, request: ExecuteRequest, reason: str) -> ExecutionResult:
        """Scheduling-phase failure: run locally from scratch (nothing ran remotely)."""
        self._observer.on_fallback(request, reason)
        await self._forget(request.session_id)
        result = await self.local_fallback.execute(
            dataclasses.replace(request, fallback_reason=reason)
        )
        return dataclasses.replace(result, fallback_reason=reason)

    async def _forget(self, session_id: str) -> None:
        self.index.remove(session_id)
        release = getattr(self.scheduler, "release", None)
        if release is None:
            return
        try:
            await _maybe_await(release(session_id))
        except Exception:
            logger.exception("scheduler release failed for %s", session_id)
