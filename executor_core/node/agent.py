"""The Golem node agent: connects out to the hub and runs the SubAgents it is assigned.

One ``NodeAgent`` per process. It keeps a WebSocket to the hub open (reconnecting with
jittered backoff), runs assigned agents up to its capacity, streams their progress, and holds
every result in a persisted outbox until the hub acknowledges it, so results survive both a
lost connection and a node restart (DESIGN §6).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import psutil
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from executor_core import __version__
from executor_core.agents import AgentContext, AgentRunner
from executor_core.node import protocol
from executor_core.node.connection import (
    HubAuthError,
    backoff_delay,
    hub_origin,
    hub_ws_url,
)
from executor_core.node.reporting import RunReporter, clip
from executor_core.node.state import NodeState, Outbox, ResultKey, Stats
from executor_core.types import ExecutionCancelled

logger = logging.getLogger("hivemind.node")

ERR_STOPPED = "node stopped before the task finished"
ERR_OUTPUT_TOO_LARGE = "output is {size} characters, over the protocol limit of {limit}"
REJECT_DRAINING = "node {name} is draining"
REJECT_AT_CAPACITY = "node {name} is at capacity ({running}/{capacity} running)"
REJECT_UNKNOWN_AGENT = "node {name} does not run agent {agent!r} (it runs: {agents})"

CANCEL_GRACE = 2.0  # seconds a cancelled agent gets to stop by itself before it is interrupted
STOP_GRACE = 5.0  # seconds interrupted runs get to unwind at shutdown
ACK_WAIT = 3.0  # seconds to wait at shutdown for the hub to acknowledge the last results
REMEMBERED_RESULTS = 256  # acknowledged results kept to answer a repeated assignment
AUTH_CLOSE_CODES = (protocol.CLOSE_UNAUTHORIZED, protocol.CLOSE_FORBIDDEN)


@dataclass(frozen=True)
class NodeConfig:
    hub: str  # http(s) base URL, validated
    name: str
    token: str
    labels: dict[str, str]
    capacity: int
    agents: tuple[str, ...]
    heartbeat: float = 5.0
    drain_timeout: float = 30.0
    max_backoff: float = 10.0


@dataclass
class Run:
    """One assignment being executed."""

    session_id: str
    attempt: int
    agent_id: str
    input: str
    ctx: AgentContext
    reporter: RunReporter
    task: asyncio.Task[None] | None = None  # the node's wrapper around the agent
    agent_task: asyncio.Task[str] | None = None
    stop_error: str = ""  # set when the node itself ends the run (shutdown)
    cancel_timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def key(self) -> ResultKey:
        return (self.session_id, self.attempt)


class NodeAgent:
    def __init__(self, config: NodeConfig, runner: AgentRunner, state: NodeState) -> None:
        self.config = config
        self._runner = runner
        self._ws_url = hub_ws_url(config.hub)
        self._origin = hub_origin(config.hub)
        self._outbox = Outbox(state.outbox_path)
        self._stats = Stats(state.stats_path)
        self._runs: dict[ResultKey, Run] = {}
        self._acked: OrderedDict[ResultKey, dict[str, Any]] = OrderedDict()
        self._ws: ClientConnection | None = None
        self._draining = False
        self._heartbeat_interval = config.heartbeat
        self._stop = asyncio.Event()
        self._force_stop = asyncio.Event()
        self._outbox_empty = asyncio.Event()

    # Lifecycle.

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT (exit code 0) or until the hub refuses our token (1)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        psutil.cpu_percent(None)  # the first call only sets the baseline for the next ones
        if len(self._outbox):
            logger.info("%d result(s) from an earlier run wait for delivery", len(self._outbox))
        connector = asyncio.create_task(self._connect_forever(), name="hub-connection")
        stop = asyncio.create_task(self._stop.wait())
        await asyncio.wait({connector, stop}, return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if connector.done():
            stop.cancel()
            logger.error("%s", connector.exception())
            code = 1
            self._force_stop.set()
        await self._shutdown()
        connector.cancel()
        with contextlib.suppress(asyncio.CancelledError, HubAuthError):
            await connector
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        logger.info("stopped")
        return code

    def request_stop(self) -> None:
        """First call: drain and stop. A second call skips the wait for running tasks."""
        if self._stop.is_set():
            logger.warning("stopping now: running tasks are interrupted")
            self._force_stop.set()
        else:
            logger.info("stopping: no new tasks, waiting for %d running", len(self._runs))
            self._stop.set()

    async def _shutdown(self) -> None:
        await self._start_draining()
        pending = {run.task for run in self._runs.values() if run.task}
        if pending and not self._force_stop.is_set():
            forced = asyncio.create_task(self._force_stop.wait())
            await asyncio.wait(
                pending | {forced},
                timeout=self.config.drain_timeout,
                return_when=asyncio.FIRST_COMPLETED
                if self._all_done_or_forced(pending, forced)
                else asyncio.ALL_COMPLETED,
            )
            forced.cancel()
        pending = {run.task for run in self._runs.values() if run.task}
        if pending:
            logger.warning("interrupting %d task(s) still running", len(pending))
            for run in list(self._runs.values()):
                run.stop_error = ERR_STOPPED
                self._interrupt(run)
            await asyncio.wait(pending, timeout=STOP_GRACE)
        for run in list(self._runs.values()):  # an agent that ignored the interruption
            self._finish(run, protocol.FAILED, "", ERR_STOPPED)
        if self._ws is not None and len(self._outbox):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ACK_WAIT):
                    await self._outbox_empty.wait()
        if len(self._outbox):
            logger.warning("%d result(s) not acknowledged, kept for the next start", len(self._outbox))

    # Connection.

    async def _connect_forever(self) -> None:
        failures = 0
        headers = {"Authorization": f"Bearer {self.config.token}"}
        while True:
            try:
                async with connect(
                    self._ws_url,
                    origin=self._origin,  # type: ignore[arg-type]
                    additional_headers=headers,
                    max_size=protocol.MAX_FRAME_BYTES,
                    open_timeout=10,
                ) as ws:
                    logger.info("connected to %s", self._ws_url)
                    if await self._session(ws):
                        failures = 0
            except InvalidStatus as exc:
                status = exc.response.status_code
                body = exc.response.body.decode("utf-8", "replace").strip()[:200]
                if status in (401, 403):
                    raise HubAuthError(
                        f"the hub refused this node's credentials (HTTP {status}"
                        f"{': ' + body if body else ''}); check --token, or register again "
                        "with --join-token after removing the stored token"
                    ) from None
                logger.warning("hub refused the connection: HTTP %s %s", status, body)
            except ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd.code in AUTH_CLOSE_CODES:
                    raise HubAuthError(
                        f"the hub closed the connection: {exc.rcvd.reason or exc.rcvd.code}"
                    ) from None
                logger.warning("connection to the hub lost: %s", exc)
            except (OSError, TimeoutError, WebSocketException) as exc:
                logger.warning("cannot reach the hub at %s: %s", self._ws_url, exc or type(exc))
            delay = backoff_delay(failures, self.config.max_backoff)
            failures += 1
            logger.info("reconnecting in %.1fs", delay)
            await asyncio.sleep(delay)

    async def _session(self, ws: ClientConnection) -> bool:
        """Serve one connection until it closes; True when the hub accepted us on it."""
        welcomed = False
        self._ws = ws
        heartbeats = asyncio.create_task(self._heartbeats(), name="heartbeats")
        try:
            running = [{"session_id": s, "attempt": a} for s, a in self._runs]
            await ws.send(
                protocol.encode(
                    "hello",
                    name=self.config.name,
                    version=__version__,
                    labels=self.config.labels,
                    capacity=self.config.capacity,
                    agents=list(self.config.agents),
                    running=running,
                )
            )
            if self._draining:
                await ws.send(protocol.encode("draining"))
            for result in self._outbox.results():
                await ws.send(protocol.encode("task.finished", **result))
            for run in self._runs.values():
                run.reporter.resend()
            async for text in ws:
                try:
                    message = protocol.parse_frame(text, direction=protocol.HUB)
                except protocol.ProtocolError as exc:
                    logger.warning("dropping a malformed frame from the hub: %s", exc)
                    continue
                welcomed = welcomed or message.type == "welcome"
                await self._handle(message)
            # The hub closed cleanly; an auth close code is raised like a failed close.
            if ws.close_code in AUTH_CLOSE_CODES:
                raise ConnectionClosed(ws.protocol.close_rcvd, ws.protocol.close_sent)
            logger.warning("the hub closed the connection (code %s)", ws.close_code)
        finally:
            self._ws = None
            heartbeats.cancel()
        return welcomed

    async def _send(self, frame: str) -> bool:
        """Send when connected; False when the frame could not go (it is not retried here)."""
        ws = self._ws
        if ws is None:
            return False
        try:
            await ws.send(frame)
        except ConnectionClosed:
            return False
        return True

    async def _heartbeats(self) -> None:
        while True:
            cpu = min(100.0, max(0.0, psutil.cpu_percent(None)))
            mem = min(100.0, max(0.0, psutil.virtual_memory().percent))
            await self._send(
                protocol.encode(
                    "heartbeat",
                    running=len(self._runs),
                    cpu=cpu,
                    mem=mem,
                    peak=self._stats.peak_running,
                )
            )
            await asyncio.sleep(self._heartbeat_interval)

    # Hub messages.

    async def _handle(self, message: protocol.Message) -> None:
        kind = message.type
        if kind == "task.assign":
            await self._on_assign(message)
        elif kind == "task.cancel":
            self._on_cancel(message["session_id"])
        elif kind == "ack":
            if self._outbox.ack((message["session_id"], message["attempt"])):
                self._remember(message["session_id"], message["attempt"])
            if not len(self._outbox):
                self._outbox_empty.set()
        elif kind == "drain":
            logger.info("the hub asked this node to drain")
            await self._start_draining()
        elif kind == "welcome":
            # Never beat slower than the hub expects, whatever --heartbeat says.
            self._heartbeat_interval = min(self.config.heartbeat, message["heartbeat_interval"])
            logger.info("welcomed by the hub as %s", message["node"])
        elif kind == "error":
            logger.warning("the hub reports an error: %s: %s", message["code"], message["message"])

    async def _start_draining(self) -> None:
        if not self._draining:
            self._draining = True
            await self._send(protocol.encode("draining"))

    async def _on_assign(self, message: protocol.Message) -> None:
        sid, attempt, agent_id = message["session_id"], message["attempt"], message["agent_id"]
        key = (sid, attempt)
        accepted = protocol.encode("task.accepted", session_id=sid, attempt=attempt)
        if key in self._runs:
            logger.info("repeated assignment of running %s attempt %d", sid, attempt)
            await self._send(accepted)
            return
        result = self._outbox.get(key) or self._acked.get(key)
        if result is not None:
            logger.info("repeated assignment of finished %s attempt %d", sid, attempt)
            await self._send(accepted)
            await self._send(protocol.encode("task.finished", **result))
            return
        reason = self._rejection(agent_id)
        if reason:
            logger.info("rejecting %s attempt %d: %s", sid, attempt, reason)
            await self._send(
                protocol.encode("task.rejected", session_id=sid, attempt=attempt, reason=reason)
            )
            return
        reporter = RunReporter(sid, self._send)
        ctx = AgentContext(
            agent_id, sid, on_progress=reporter.on_progress, on_log=reporter.on_log
        )
        run = Run(sid, attempt, agent_id, message["input"], ctx, reporter)
        self._runs[key] = run
        self._stats.run_started()
        run.task = asyncio.create_task(self._execute(run), name=f"run-{sid}-{attempt}")

    def _rejection(self, agent_id: str) -> str:
        name = self.config.name
        if self._draining:
            return REJECT_DRAINING.format(name=name)
        if agent_id not in self.config.agents:
            return REJECT_UNKNOWN_AGENT.format(
                name=name, agent=agent_id, agents=", ".join(self.config.agents)
            )
        if len(self._runs) >= self.config.capacity:
            return REJECT_AT_CAPACITY.format(
                name=name, running=len(self._runs), capacity=self.config.capacity
            )
        return ""

    def _on_cancel(self, session_id: str) -> None:
        runs = [run for run in self._runs.values() if run.session_id == session_id]
        for run in runs:
            logger.info("cancelling %s attempt %d", run.session_id, run.attempt)
            run.ctx.cancel()
            if run.cancel_timer is None:
                loop = asyncio.get_running_loop()
                run.cancel_timer = loop.call_later(CANCEL_GRACE, self._interrupt, run)

    def _interrupt(self, run: Run) -> None:
        run.ctx.cancel()
        if run.agent_task is not None:
            run.agent_task.cancel()

    # Running.

    async def _execute(self, run: Run) -> None:
        await self._send(
            protocol.encode("task.accepted", session_id=run.session_id, attempt=run.attempt)
        )
        logger.info("running %s attempt %d (%s)", run.session_id, run.attempt, run.agent_id)
        pump = asyncio.create_task(run.reporter.pump())
        run.agent_task = asyncio.create_task(self._runner.run(run.input, run.ctx))
        await asyncio.wait({run.agent_task})
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        await run.reporter.flush()  # the final progress goes before task.finished
        status, output, error = self._outcome(run, run.agent_task)
        self._finish(run, status, output, error)
        await self._send(protocol.encode("task.finished", **self._outbox.get(run.key)))

    def _outcome(self, run: Run, task: asyncio.Task[str]) -> tuple[str, str, str]:
        """(status, output, error) of a finished agent task."""
        if task.cancelled():
            return (protocol.FAILED, "", run.stop_error) if run.stop_error else (
                protocol.CANCELLED,
                "",
                "cancelled",
            )
        exc = task.exception()
        if exc is None:
            output = task.result()
            output = output if isinstance(output, str) else str(output)
            if len(output) > protocol.MAX_PAYLOAD_CHARS:
                error = ERR_OUTPUT_TOO_LARGE.format(
                    size=len(output), limit=protocol.MAX_PAYLOAD_CHARS
                )
                return protocol.FAILED, clip(output, protocol.MAX_PAYLOAD_CHARS), error
            return protocol.SUCCEEDED, output, ""
        if run.stop_error:
            return protocol.FAILED, "", run.stop_error
        if isinstance(exc, ExecutionCancelled):
            return protocol.CANCELLED, "", str(exc) or "cancelled"
        logger.info(
            "%s attempt %d failed: %r", run.session_id, run.attempt, exc, exc_info=exc
        )
        return protocol.FAILED, "", str(exc) or type(exc).__name__

    def _finish(self, run: Run, status: str, output: str, error: str) -> None:
        """Record a run's result in the outbox and free its slot (synchronous: no frame lost
        between the two)."""
        if self._runs.pop(run.key, None) is None:
            return
        if run.cancel_timer is not None:
            run.cancel_timer.cancel()
        result = {
            "session_id": run.session_id,
            "attempt": run.attempt,
            "status": status,
            "output": output,
            "error": clip(error, protocol.MAX_ERROR_CHARS),
        }
        try:
            protocol.encode("task.finished", **result)
        except protocol.ProtocolError:
            # Only a pathological output (mostly escaped characters) gets here.
            result["output"] = clip(output, protocol.MAX_FRAME_BYTES // 8)
        self._outbox_empty.clear()
        self._outbox.add(result)
        self._stats.run_finished()
        logger.info("%s attempt %d %s", run.session_id, run.attempt, status)

    def _remember(self, session_id: str, attempt: int) -> None:
        """Keep an acknowledged result a while, to answer a repeated assignment of it."""
        ...
