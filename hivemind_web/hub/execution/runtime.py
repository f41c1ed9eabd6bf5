"""The hub runtime: executor_core's router and executors wired to the database.

One Runtime per hub process lives on the hub loop (see ``loop``). Services reach it through
the module functions at the bottom, which are safe to call from any thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import secrets
import socket
import time
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from executor_core import (
    AgentRegistry,
    ExecuteRequest,
    ExecutionRouter,
    ExecutionStrategy,
    GolemExecutor,
    LocalExecutor,
    NodeTaskIndex,
    NullObserver,
)
from executor_core.executors import ERR_AT_CAPACITY
from executor_core.types import AtCapacityError, ExecutionResult, ExecutorError, TaskStatus
from hivemind_web.hub.agents import hub_registry
from hivemind_web.hub.broadcast import node_group
from hivemind_web.hub.execution import loop as hub_loop
from hivemind_web.hub.execution.dispatcher import NodeDispatcher
from hivemind_web.hub.execution.progress import ProgressCoalescer
from hivemind_web.hub.execution.scheduler import HubScheduler
from hivemind_web.hub.execution.writer import OrderedWriter
from hivemind_web.hub.models import Task
from hivemind_web.hub.services import tasks as task_services
from hivemind_web.hub.services.hub import fallback_mode_enabled

log = logging.getLogger(__name__)
# (session id, attempt) of the run_task coroutine a callback belongs to.
_CURRENT: contextvars.ContextVar[tuple[str, int]] = contextvars.ContextVar("hivemind_attempt")

# Names this process in Task.owner: a restart fails the local attempts it left behind.
# Unique per process unless HIVEMIND_INSTANCE gives a stable name (then a restart releases
# what the previous run left at once, instead of when its lease runs out).
INSTANCE = (
    os.environ.get("HIVEMIND_INSTANCE")
    or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
)
# Every hub process's runtime listens here (cancels of local runs).
RUNTIME_GROUP = "hub.runtime"
FALLBACK_MODE_REASON = "fallback mode is on: every task runs locally"


class HubObserver(NullObserver):
    """executor_core events → database writes, in order, without blocking the loop."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def on_started(self, request: ExecuteRequest, executor_name: str) -> None:
        if executor_name == "local":
            self.runtime.writer.enqueue(
                task_services.task_mark_running,
                session_id=request.session_id,
                attempt=self.runtime.attempt_of(request.session_id),
                owner=INSTANCE,
            )

    def on_progress(self, session_id: str, pct: float, message: str) -> None:
        self.runtime.progress.add(session_id, pct=pct, message=message)

    def on_log(self, session_id: str, lines: list[str]) -> None:
        self.runtime.progress.add(session_id, lines=list(lines))

    def on_fallback(self, request: ExecuteRequest, reason: str) -> None:
        self.runtime.fallback_reasons[request.session_id] = reason


class LocalFallback:
    """GolemExecutor's local fallback: records why, then runs the attempt locally."""

    name = "local"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def execute(self, request: ExecuteRequest) -> ExecutionResult:
        sid = request.session_id
        reason = self.runtime.fallback_reasons.pop(sid, "scheduling failed")
        recorded = await self.runtime.writer.run(
            task_services.task_record_fallback,
            session_id=sid,
            attempt=self.runtime.attempt_of(sid),
            reason=reason,
        )
        if not recorded:  # cancelled or superseded meanwhile: nothing to run
            return ExecutionResult(sid, TaskStatus.CANCELLED, "local", fallback_reason=reason)
        result = await self.runtime.local.execute(request)
        return ExecutionResult(
            sid,
            result.status,
            "local",
            output=result.output,
            error=result.error,
            fallback_reason=reason,
        )


class Runtime:
    def __init__(self, registry: AgentRegistry | None = None) -> None:
        cfg = settings.HIVEMIND
        self.cfg = cfg
        self.registry = registry or hub_registry()
        self.writer = OrderedWriter()
        self.progress = ProgressCoalescer(self.writer, cfg["PROGRESS_FLUSH"])
        self.observer = HubObserver(self)
        self.fallback_reasons: dict[str, str] = {}
        # Heartbeats wait here until the reaper writes them in one batch.
        self.heartbeats: dict[str, dict[str, Any]] = {}
        self.local = LocalExecutor(
            self.registry,
            concurrency=cfg["LOCAL_CONCURRENCY"],
            queue_limit=cfg["LOCAL_QUEUE_LIMIT"],
            observer=self.observer,
        )
        self.scheduler = HubScheduler(self, retries=cfg["BIND_RETRIES"])
        self.dispatcher = NodeDispatcher(self, timeout=cfg["ASSIGN_TIMEOUT"])
        self.golem = GolemExecutor(
            self.scheduler,
            LocalFallback(self),
            observer=self.observer,
            index=NodeTaskIndex(),
            dispatcher=self.dispatcher,
        )
        self.router = ExecutionRouter(observer=self.observer)
        self.router.register_executor(ExecutionStrategy.LOCAL, self.local)
        self.router.register_executor(ExecutionStrategy.GOLEM, self.golem)
        self._background: set[asyncio.Task[Any]] = set()
        self.control_channel: str | None = None
        self.instance = INSTANCE
        self.started = False
        self.started_at = 0.0

    def attempt_of(self, session_id: str) -> int:
        """The attempt the calling run_task carries (each run_task has its own context, so
        two coroutines working on different attempts of one task never see each other's)."""
        current = _CURRENT.get(None)
        if current is None or current[0] != session_id:
            raise RuntimeError(f"no attempt of {session_id} is being run in this context")
        return current[1]

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def start(self) -> None:
        """Keep house, and recover what a previous run of this instance left behind."""
        if self.started:
            return
        self.started = True
        self.started_at = time.monotonic()
        from hivemind_web.hub.execution.reaper import Reaper

        # Housekeeping first: a recovery that fails (the database still booting) must not
        # leave the hub without heartbeat bookkeeping; it is retried until it succeeds.
        self.spawn(Reaper(self).run())
        self.spawn(self._listen())
        self.spawn(self._recover())

    async def _recover(self) -> None:
        from hivemind_web.hub.execution.reaper import recover_after_restart

        while True:
            try:
                pending = await database_sync_to_async(recover_after_restart)(self.instance)
                break
            except Exception:
                log.exception("recovery after restart failed; retrying in 2 s")
                await asyncio.sleep(2.0)
        for session_id, attempt in pending:
            self.spawn(self.run_task(session_id, attempt))

    async def join_control_group(self) -> None:
        """(Re)join the group every hub process listens on (groups expire in Redis)."""
        layer = get_channel_layer()
        if self.control_channel is None:
            self.control_channel = await layer.new_channel()
        await layer.group_add(RUNTIME_GROUP, self.control_channel)

    async def _listen(self) -> None:
        """Cancels of local runs reach every hub process: only the one running it acts."""
        layer = get_channel_layer()
        while True:
            try:
                await self.join_control_group()
                while True:
                    message = await layer.receive(self.control_channel)
                    if message.get("type") == "local.cancel":
                        self.local.cancel(message["session_id"])
            except Exception:  # a broker hiccup must not end the listening for good
                log.exception("hub control channel failed; listening again in 1 s")
                await asyncio.sleep(1.0)

    async def run_task(self, session_id: str, attempt: int) -> None:
        """Route one attempt and carry it as far as this process carries it."""
        task = await database_sync_to_async(_load_pending)(session_id, attempt)
        if task is None:
            return
        _CURRENT.set((session_id, attempt))
        try:
            await self._run(task, session_id, attempt)
        except Exception as exc:  # never leave a task stuck on a bug or an outage
            log.exception("task %s attempt %s crashed in the hub", session_id, attempt)
            await self._finish(session_id, attempt, TaskStatus.FAILED, error=f"hub error: {exc}")
        finally:
            # The database is the hub's task→node index (selectors.tasks_on_node, team_nodes);
            # the executor's in-memory copy is only needed while placing.
            self.golem.index.remove(session_id)

    async def _run(self, task: Task, session_id: str, attempt: int) -> None:
        request = ExecuteRequest(
            agent_id=task.agent_id,
            session_id=session_id,
            input=task.input,
            strategy=task.strategy,
            team_id=task.team.name if task.team_id else None,
            node_selector=task.node_selector,
            affinity_policy=task.affinity,
        )
        if task.force_local:
            executor, route, reason = self.local, "local", task.fallback_reason
        elif (
            request.strategy != ExecutionStrategy.LOCAL
            and await database_sync_to_async(fallback_mode_enabled)()
        ):
            executor, route, reason = self.local, "local", FALLBACK_MODE_REASON
        else:
            decision = await self.router.decide(request)
            executor, route, reason = decision.executor, decision.strategy.value, decision.reason
        routed = await self.writer.run(
            task_services.task_mark_routed,
            session_id=session_id,
            attempt=attempt,
            route=route,
            reason=reason,
            owner=INSTANCE,
        )
        if not routed:
            return  # cancelled or superseded while being routed
        try:
            result = await executor.execute(request)
        except AtCapacityError as exc:
            await self._finish(session_id, attempt, TaskStatus.FAILED, error=str(exc))
            return
        except ExecutorError as exc:
            await self._finish(session_id, attempt, TaskStatus.FAILED, error=str(exc))
            return
        if result.status in (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED):
            await self._finish(
                session_id, attempt, result.status, output=result.output, error=result.error
            )

    async def _finish(
        self, session_id: str, attempt: int, status: str, *, output: str = "", error: str = ""
    ) -> None:
        await self.progress.flush(session_id)
        await self.writer.run(
            task_services.task_finish,
            session_id=session_id,
            attempt=attempt,
            status=status,
            output=output,
            error=error,
        )

    async def send_cancel(self, node: str, session_id: str) -> None:
        await get_channel_layer().group_send(
            node_group(node), {"type": "task.cancel", "session_id": session_id}
        )

    async def stop(self, session_id: str, node: str | None) -> None:
        """Stop the attempt on ``node``, or, without one, the task's local run (a cancel)."""
        if node:
            await self.send_cancel(node, session_id)
            return
        # The local run may live in another hub process: tell them all.
        if not self.local.cancel(session_id):
            await get_channel_layer().group_send(
                RUNTIME_GROUP, {"type": "local.cancel", "session_id": session_id}
            )


def _load_pending(session_id: str, attempt: int) -> Task | None:
    return (
        Task.objects.select_related("team")
        .filter(session_id=session_id, attempts=attempt, status=TaskStatus.PENDING)
        .first()
    )


_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        _runtime = Runtime()
    return _runtime


def reset_runtime() -> None:
    """Forget the runtime (tests that swap settings start a fresh one)."""
    global _runtime
    _runtime = None


async def ensure_started() -> Runtime:
    runtime = get_runtime()
    await runtime.start()
    return runtime


async def _start_and_run(session_id: str, attempt: int) -> None:
    runtime = await ensure_started()
    await runtime.run_task(session_id, attempt)


def start_task(session_id: str, attempt: int) -> None:
    """Begin routing a pending attempt (called after the submit transaction commits)."""
    hub_loop.submit(_start_and_run(session_id, attempt))


def stop_task(session_id: str, node: str | None) -> None:
    hub_loop.submit(get_runtime().stop(session_id, node))


def send_drain(node: str) -> None:
    layer = get_channel_layer()
    hub_loop.submit(layer.group_send(node_group(node), {"type": "node.drain"}))


def local_capacity_refusal(extra: int = 0) -> str:
    """Why a new local run (and ``extra`` more) would be refused now, or "" when there is room.

    Read from a request thread: the counts are plain ints, a momentarily stale read only
    moves the refusal to the executor itself, which fails the task with the same message.
    """
    local = get_runtime().local
    if local.queued + extra >= local.queue_limit:
        return ERR_AT_CAPACITY.format(queued=local.queued, limit=local.queue_limit)
    return ""
