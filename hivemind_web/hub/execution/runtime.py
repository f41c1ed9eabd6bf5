"""The hub runtime: executor_core's router and executors wired to the database.

One Runtime per hub process lives on the hub loop (see ``loop``). It is the services'
``RuntimePort`` (``hivemind_web.hub.intents``): once started, what a committed transition
announces (start or stop an attempt, a freed slot, a node change) reaches it here, from any
thread. Its collaborators get what they use: the scheduler the writer and the index, the
dispatcher the writer and a group send, the reaper the runtime's housekeeping methods.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

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
from executor_core.scheduling import ClusterState, Placement
from executor_core.types import ExecutionResult, ExecutorError, TaskStatus
from hivemind_web.hub import intents
from hivemind_web.hub.agents import hub_registry
from hivemind_web.hub.broadcast import node_group
from hivemind_web.hub.execution.batching import BATCHED
from hivemind_web.hub.execution.connections import NodeConnections
from hivemind_web.hub.execution.dispatcher import NodeDispatcher
from hivemind_web.hub.execution.progress import ProgressCoalescer
from hivemind_web.hub.execution.scheduler import HubScheduler, NotRouted
from hivemind_web.hub.execution.waiting import WaitQueue
from hivemind_web.hub.execution.writer import GroupWriter, retrieve
from hivemind_web.hub.intents import AttemptSpec
from hivemind_web.hub.services import tasks as task_services
from hivemind_web.hub.services.hub import fallback_mode_enabled

log = logging.getLogger(__name__)

# Names this process in Task.owner: a restart fails the local attempts it left behind.
# Unique per process unless HIVEMIND_INSTANCE gives a stable name (then a restart releases
# what the previous run left at once, instead of when its lease runs out).
INSTANCE = (
    os.environ.get("HIVEMIND_INSTANCE")
    or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
)
# Every hub process's runtime listens here (cancels of local runs, the fallback switch).
RUNTIME_GROUP = "hub.runtime"
FALLBACK_MODE_REASON = "fallback mode is on: every task runs locally"


class HubObserver(NullObserver):
    """executor_core events → database writes, in order, without blocking the loop."""

    def __init__(self, writer: GroupWriter, progress: ProgressCoalescer) -> None:
        self.writer = writer
        self.progress = progress

    def on_started(self, request: ExecuteRequest, executor_name: str) -> None:
        if executor_name == "local":
            self.writer.enqueue(
                task_services.task_mark_running,
                session_id=request.session_id,
                attempt=request.attempt,
                owner=INSTANCE,
                at=timezone.now(),
            )

    def on_progress(self, session_id: str, pct: float, message: str) -> None:
        self.progress.add(session_id, pct=pct, message=message)

    def on_log(self, session_id: str, lines: list[str]) -> None:
        self.progress.add(session_id, lines=list(lines))


class LocalFallback:
    """GolemExecutor's local fallback: records why, then runs the attempt locally.
    ``records`` holds the scheduler's account of failed decisions, kept on the attempt."""

    name = "local"

    def __init__(
        self,
        writer: GroupWriter,
        local: LocalExecutor,
        records: dict[str, dict[str, Any]],
        routed: Callable[[str], Any],
    ) -> None:
        self.writer = writer
        self.local = local
        self.records = records
        self.routed = routed  # waits for the attempt's routing; NotRouted if refused

    async def execute(self, request: ExecuteRequest) -> ExecutionResult:
        sid, reason = request.session_id, request.fallback_reason or "scheduling failed"
        await self.routed(sid)
        recorded = await self.writer.run(
            task_services.task_record_fallback,
            session_id=sid,
            attempt=request.attempt,
            reason=reason,
            record=self.records.pop(sid, None),
        )
        if not recorded:  # cancelled or superseded meanwhile: nothing to run
            return ExecutionResult(sid, TaskStatus.CANCELLED, "local", fallback_reason=reason)
        result = await self.local.execute(request)
        return ExecutionResult(
            sid,
            result.status,
            "local",
            output=result.output,
            error=result.error,
            fallback_reason=reason,
            usage=result.usage,
        )


def request_of(spec: AttemptSpec) -> ExecuteRequest:
    return ExecuteRequest(
        agent_id=spec.agent_id,
        session_id=spec.session_id,
        input=spec.input,
        strategy=spec.strategy,
        team_id=spec.team,
        node_selector=spec.node_selector,
        affinity_policy=spec.affinity,
        attempt=spec.attempt,
        excluded_nodes=frozenset(spec.excluded_nodes),
        fallback_reason=spec.fallback_reason,
        node=spec.node,
        prefer_labels=spec.prefer_labels,
        capabilities=frozenset(spec.capabilities),
        min_free_memory_mb=spec.resources.get("min_free_memory_mb"),
        max_cpu_percent=spec.resources.get("max_cpu_percent"),
        model=spec.model,
        priority=spec.priority,
        max_wait=spec.max_wait,
        timeout=spec.timeout,
    )


class Runtime:
    def __init__(self, registry: AgentRegistry | None = None) -> None:
        cfg = settings.HIVEMIND
        self.cfg = cfg
        self.registry = registry or hub_registry()
        self.writer = GroupWriter("hivemind-db", batched=BATCHED)
        self.progress = ProgressCoalescer(self.writer, cfg["PROGRESS_FLUSH"])
        self.observer = HubObserver(self.writer, self.progress)
        # Heartbeats wait here until the reaper writes them in one batch; ``heard`` is when
        # this process last heard each node (monotonic), written or not.
        self.heartbeats: dict[str, dict[str, Any]] = {}
        self.heard: dict[str, float] = {}
        self.connections = NodeConnections(
            self.writer, idle_limit=cfg["HEARTBEAT_GRACE"], instance=INSTANCE
        )
        self.fallback_mode = False
        self.local = LocalExecutor(
            self.registry,
            concurrency=cfg["LOCAL_CONCURRENCY"],
            queue_limit=cfg["LOCAL_QUEUE_LIMIT"],
            observer=self.observer,
        )
        # The live task→node map: kept in step by bind and release, resynced from the database.
        self.index = NodeTaskIndex()
        self.scheduler = HubScheduler(
            writer=self.writer,
            index=self.index,
            retries=cfg["BIND_RETRIES"],
            cluster=ClusterState(profile=cfg.get("SCHEDULER_PROFILE")),
            owner=INSTANCE,
        )
        self.dispatcher = NodeDispatcher(
            writer=self.writer,
            group_send=self.group_send,
            timeout=cfg["ASSIGN_TIMEOUT"],
            reply_to=lambda: self.control_channel,
        )
        self.wait_queue = WaitQueue(
            writer=self.writer,
            scheduler=self.scheduler,
            index=self.index,
            owner=INSTANCE,
            request_of=request_of,
            place=lambda spec, placement: self.spawn(self.run_placed(spec, placement)),
            fall_back=lambda spec: self.spawn(self.run_fallback(spec)),
            spawn=self.spawn,
            local=self.local,
            requeue=lambda spec: self.spawn(self._guarded(spec, self.run_local(spec))),
        )
        self.scheduler.on_resync = self.wait_queue.room_maybe
        self.fallback = LocalFallback(
            self.writer, self.local, self.wait_queue.records, self.scheduler.routed
        )
        self.golem = GolemExecutor(
            self.scheduler,
            self.fallback,
            observer=self.observer,
            index=self.index,
            dispatcher=self.dispatcher,
            wait_queue=self.wait_queue,
        )
        self.router = ExecutionRouter(observer=self.observer)
        self.router.register_executor(ExecutionStrategy.LOCAL, self.local)
        self.router.register_executor(ExecutionStrategy.GOLEM, self.golem)
        self._background: set[asyncio.Task[Any]] = set()
        self.control_channel: str | None = None
        self.instance = INSTANCE
        self.loop: asyncio.AbstractEventLoop | None = None
        # A graceful stop (``shutdown``): no new work once stopping; once stopped, what this
        # process still has to report counts for nothing (it gave its work up).
        self.stopping = False
        self.stopped = False
        self.started = False
        self.started_at = 0.0

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
        self.loop = asyncio.get_running_loop()
        from hivemind_web.hub.execution.reaper import Reaper

        intents.install(self)
        # Housekeeping first: a recovery that fails (the database still booting) must not
        # leave the hub without heartbeat bookkeeping; it is retried until it succeeds.
        self.spawn(Reaper(self).run())
        self.spawn(self.scheduler.run())
        self.spawn(self._listen())
        self.spawn(self._recover())

    def close(self) -> None:
        intents.uninstall(self)
        for task in list(self._background):
            task.cancel()
        self.writer.close()

    async def _recover(self) -> None:
        from hivemind_web.hub.execution.reaper import recover_after_restart

        while True:
            try:
                specs = await self.writer.run(recover_after_restart, self.instance)
                self.fallback_mode = await self.writer.run(fallback_mode_enabled)
                break
            except Exception:
                log.exception("recovery after restart failed; retrying in 2 s")
                await asyncio.sleep(2.0)
        for spec in specs:
            self.spawn(self.run_attempt(spec))

    # -- the RuntimePort: announcements after commit, from any thread -----------------------

    def _soon(self, fn: Callable[[], Any]) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        try:
            here = asyncio.get_running_loop() is loop
        except RuntimeError:
            here = False
        if here:
            fn()
        elif not self.writer.defer(fn):
            loop.call_soon_threadsafe(fn)

    def start_attempt(self, spec: AttemptSpec) -> None:
        self._soon(lambda: self.spawn(self.run_attempt(spec)))

    def stop_attempt(self, session_id: str, node: str | None) -> None:
        self._soon(lambda: self.spawn(self.stop(session_id, node)))

    def attempt_ended(self, session_id: str) -> None:
        def forget() -> None:
            self.index.remove(session_id)
            self.scheduler.release(session_id)
            self.wait_queue.wake()  # a slot freed: the head of the queue may take it

        self._soon(forget)

    def configure_node(self, node: str, config: dict[str, Any]) -> None:
        message = {"type": "node.configure", "config": config}
        self._soon(lambda: self.spawn(self.group_send(node_group(node), message)))

    def nodes_changed(self) -> None:
        self._soon(self.scheduler.wake)

    def fallback_mode_changed(self, enabled: bool) -> None:
        def tell_all() -> None:
            self.fallback_mode = enabled
            message = {"type": "fallback.mode", "enabled": enabled}
            self.spawn(self.group_send(RUNTIME_GROUP, message))

        self._soon(tell_all)

    def local_capacity_refusal(self, extra: int = 0) -> str:
        """Why a new local run (and ``extra`` more) would be refused now, or "" when there is
        room. Read from any thread: the counts are plain ints, and a momentarily stale read
        only moves the refusal to the executor itself, which fails the task the same way."""
        local = self.local
        if local.queued + extra >= local.queue_limit:
            return ERR_AT_CAPACITY.format(queued=local.queued, limit=local.queue_limit)
        return ""

    # -- what the node consumer reports ----------------------------------------------------

    def write(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> asyncio.Future:
        """Queue a service call on the runtime's writer (await the result)."""
        return self.writer.enqueue(fn, *args, **kwargs)

    def note_heartbeat(self, node: str, beat: dict[str, Any]) -> None:
        self.heartbeats[node] = beat
        self.heard[node] = time.monotonic()
        self.scheduler.note_resources(
            node, beat["cpu"], beat.get("free_memory_mb"), beat.get("free_disk_mb")
        )

    def heard_since(self, seconds_ago: float) -> list[str]:
        """Nodes this process heard from within the last ``seconds_ago`` seconds."""
        since = time.monotonic() - seconds_ago
        return [name for name, at in self.heard.items() if at >= since]

    def report_progress(self, session_id: str, **report: Any) -> None:
        self.progress.add(session_id, **report)

    def take_progress(self, session_id: str) -> dict[str, Any] | None:
        """The task's last coalesced report, for its end to carry (``task_finish``)."""
        return self.progress.take(session_id)

    # -- the control channel ----------------------------------------------------------------

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        await get_channel_layer().group_send(group, message)

    async def join_control_group(self) -> None:
        """(Re)join the group every hub process listens on (groups expire in Redis)."""
        layer = get_channel_layer()
        if self.control_channel is None:
            self.control_channel = await layer.new_channel()
        await layer.group_add(RUNTIME_GROUP, self.control_channel)

    async def _listen(self) -> None:
        """Messages for this process: local cancels, acceptances of our assignments heard
        by another hub's node consumer, the fallback switch."""
        layer = get_channel_layer()
        while True:
            try:
                await self.join_control_group()
                while True:
                    message = await layer.receive(self.control_channel)
                    kind = message.get("type")
                    if kind == "local.cancel":
                        self.local.cancel(message["session_id"])
                    elif kind == "dispatch.resolve":
                        self.dispatcher.resolve(
                            message["session_id"], message["attempt"], message.get("rejection")
                        )
                    elif kind == "fallback.mode":
                        self.fallback_mode = bool(message.get("enabled"))
            except Exception:  # a broker hiccup must not end the listening for good
                log.exception("hub control channel failed; listening again in 1 s")
                await asyncio.sleep(1.0)

    async def resolve_dispatch(
        self, session_id: str, attempt: int, reply_to: str | None, rejection: str | None = None
    ) -> None:
        """A node answered an assignment: tell the dispatcher waiting for it, here or in the
        hub process that sent it."""
        if self.dispatcher.resolve(session_id, attempt, rejection):
            return
        if reply_to and reply_to != self.control_channel:
            message = {
                "type": "dispatch.resolve",
                "session_id": session_id,
                "attempt": attempt,
                "rejection": rejection,
            }
            try:
                await get_channel_layer().send(reply_to, message)
            except Exception:  # that hub is gone: its assignment times out
                log.warning("could not tell %s about %s", reply_to, session_id)

    # -- running attempts ------------------------------------------------------------------

    async def run_attempt(self, spec: AttemptSpec) -> None:
        """Route one attempt and carry it as far as this process carries it."""
        await self._guarded(spec, self._run(spec))

    async def run_placed(self, spec: AttemptSpec, placement: Placement) -> None:
        """An attempt the wait queue bound to a node: hand it over."""
        await self._guarded(
            spec, self._carry(spec, self.golem.hand_over(request_of(spec), placement))
        )

    async def run_fallback(self, spec: AttemptSpec) -> None:
        """An attempt that waited past its time: run it locally, with the reason."""
        await self._guarded(spec, self._carry(spec, self.fallback.execute(request_of(spec))))

    async def _guarded(self, spec: AttemptSpec, work: Any) -> None:
        sid, attempt = spec.session_id, spec.attempt
        if self.stopping:
            return  # left unclaimed: another hub process, or this one restarted, routes it
        try:
            await work
        except Exception as exc:  # never leave a task stuck on a bug or an outage
            log.exception("task %s attempt %s crashed in the hub", sid, attempt)
            await self._finish(sid, attempt, TaskStatus.FAILED, error=f"hub error: {exc}")

    async def _carry(self, spec: AttemptSpec, execution: Any) -> None:
        try:
            result = await execution
        except ExecutorError as exc:  # the local queue is full, or a duplicate run
            await self._finish(spec.session_id, spec.attempt, TaskStatus.FAILED, error=str(exc))
            return
        if result.status.is_terminal:
            await self._finish(
                spec.session_id,
                spec.attempt,
                result.status,
                output=result.output,
                error=result.error,
                usage=result.usage,
            )

    async def _run(self, spec: AttemptSpec) -> None:
        request = request_of(spec)
        if spec.force_local:
            executor, route, reason = self.local, "local", spec.fallback_reason
        elif request.strategy != ExecutionStrategy.LOCAL and self.fallback_mode:
            executor, route, reason = self.local, "local", FALLBACK_MODE_REASON
        else:
            decision = await self.router.decide(request)
            executor, route, reason = decision.executor, decision.strategy.value, decision.reason
        routing = self.writer.enqueue(
            task_services.task_mark_routed,
            session_id=spec.session_id,
            attempt=spec.attempt,
            route=route,
            reason=reason,
            owner=INSTANCE,
        )
        if executor is self.golem:
            # Decided and bound without waiting for the routing: the bind, queued in this
            # same step, lands in the same batch, and only if the routing did (DESIGN §10).
            routing.add_done_callback(retrieve)  # awaited only when something was refused
            self.scheduler.routing[spec.session_id] = routing
            try:
                await self._carry(spec, executor.execute(request))
            except NotRouted:
                return  # cancelled or superseded while being routed, or another hub has it
            finally:
                self.scheduler.routing.pop(spec.session_id, None)
            return
        if not await routing:
            return  # cancelled or superseded while being routed, or another hub has it
        if executor is self.local and request.strategy == ExecutionStrategy.AUTO:
            await self.run_local(spec)
            return
        await self._carry(spec, executor.execute(request))

    async def run_local(self, spec: AttemptSpec) -> None:
        """An auto attempt routed locally: while it waits for a local slot, a node that frees
        up may take it instead (the wait queue withdraws it from the local queue)."""
        offerable = self.wait_queue.offerable
        offerable[spec.session_id] = spec
        try:
            await self._carry(spec, self.local.execute(request_of(spec)))
        finally:
            if offerable.get(spec.session_id) is spec:
                del offerable[spec.session_id]

    async def _finish(
        self,
        session_id: str,
        attempt: int,
        status: str,
        *,
        output: str = "",
        error: str = "",
        usage: Mapping[str, Any] | None = None,
    ) -> None:
        if self.stopped:
            return
        await self.writer.run(
            task_services.task_finish,
            session_id=session_id,
            attempt=attempt,
            status=status,
            output=output,
            error=error,
            usage=dict(usage or {}),
            at=timezone.now(),
            progress=self.progress.take(session_id),
        )

    async def stop(self, session_id: str, node: str | None) -> None:
        """Stop the attempt on ``node``, or, without one, the task's local run (a cancel)."""
        if node:
            await self.group_send(
                node_group(node), {"type": "task.cancel", "session_id": session_id}
            )
            return
        # The local run may live in another hub process: tell them all.
        if not self.local.cancel(session_id):
            await self.group_send(RUNTIME_GROUP, {"type": "local.cancel", "session_id": session_id})


_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        _runtime = Runtime()
    return _runtime


def reset_runtime() -> None:
    """Forget the runtime (tests that swap settings start a fresh one)."""
    global _runtime
    if _runtime is not None:
        _runtime.close()
    _runtime = None


async def ensure_started() -> Runtime:
    runtime = get_runtime()
    await runtime.start()
    return runtime
