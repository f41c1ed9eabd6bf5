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
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.typing import Origin

from executor_core import __version__
from executor_core.agents import AgentContext, AgentRunner
from executor_core.node import protocol
from executor_core.node.connection import (
    HubAuthError,
    backoff_delay,
    hub_origin,
    hub_ws_url,
)
from executor_core.node.load import ProcessLoad
from executor_core.node.reporting import RunReporter
from executor_core.node.runs import Run, outcome, result_of
from executor_core.node.state import NodeState, Outbox, ResultKey, Stats

logger = logging.getLogger("hivemind.node")

ERR_STOPPED = "node stopped before the task finished"
ERR_AUTH = (
    "the hub refused this node's credentials ({detail}); check --token, or remove the stored "
    "token and register again with --join-token"
)
WARN_IDENTITY_IN_USE = (
    "the hub refused this connection: %s (is another hivemind-node running with this "
    "node's name and token?); retrying"
)
# Why an assignment is refused. The hub prefixes "node <name> rejected the task: ", so the
# reasons do not name the node again.
REJECT_DRAINING = "draining"
REJECT_STOPPING = "shutting down"
REJECT_CORDONED = "cordoned"
REJECT_AT_CAPACITY = "at capacity ({running}/{capacity} running)"
REJECT_UNKNOWN_AGENT = "does not run agent {agent!r} (it runs: {agents})"

CANCEL_GRACE = 2.0  # seconds a cancelled agent gets to stop by itself before it is interrupted
STOP_GRACE = 5.0  # seconds interrupted runs get to unwind at shutdown
ACK_WAIT = 3.0  # seconds to wait at shutdown for the hub to acknowledge the last results
REMEMBERED_RESULTS = 128  # acknowledged results kept to answer a repeated assignment
MIN_HEARTBEAT = 0.1  # whatever the hub asks, a node does not beat faster than this
AUTH_CLOSE_CODES = (protocol.CLOSE_UNAUTHORIZED, protocol.CLOSE_FORBIDDEN)


@dataclass(frozen=True)
class NodeConfig:
    hubs: tuple[str, ...]  # http(s) base URLs, validated, in order of preference
    name: str
    token: str
    labels: dict[str, str]
    capacity: int
    agents: tuple[str, ...]
    capabilities: tuple[str, ...] = ()
    # Models the node's agents serve (advertised in hello; the scheduler filters on them).
    models: tuple[str, ...] = ()
    heartbeat: float = 5.0
    drain_timeout: float = 30.0
    max_backoff: float = 10.0


class NodeAgent:
    def __init__(self, config: NodeConfig, runner: AgentRunner, state: NodeState) -> None:
        self.config = config
        self._runner = runner
        # Where to connect: each hub's socket URL and the Origin its own pages would send.
        self._endpoints = [(hub_ws_url(hub), Origin(hub_origin(hub))) for hub in config.hubs]
        self._outbox = Outbox(state.outbox_path)
        self._stats = Stats(state.stats_path)
        self._runs: dict[ResultKey, Run] = {}
        self._acked: OrderedDict[ResultKey, dict[str, Any]] = OrderedDict()
        self._ws: ClientConnection | None = None
        self._welcomed = False
        self._stopping = False  # shutting down: takes no more work, whatever the hub says
        # The hub's word on this node (node.config), applied as it comes: the operator's
        # cordon, drain, capacity and labels, and the generation of the last one applied.
        self._cordoned = False
        self._draining = False
        self._capacity = config.capacity
        self._labels = dict(config.labels)
        self._generation = 0
        self._heartbeat_interval = config.heartbeat
        self._stop = asyncio.Event()
        self._force_stop = asyncio.Event()
        self._interactive_stop = False
        # The node's own process tree, not the whole host; free disk where it keeps its state.
        self._load = ProcessLoad(directory=state.directory)
        self._outbox_empty = asyncio.Event()
        if not len(self._outbox):
            self._outbox_empty.set()

    # Lifecycle.

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT (exit code 0) or until the hub refuses our token (1)."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop, True)
        if len(self._outbox):
            logger.info("%d result(s) from an earlier run wait for delivery", len(self._outbox))
        connector = asyncio.create_task(self._connect_forever(), name="hub-connection")
        stop = asyncio.create_task(self._stop.wait())
        await asyncio.wait({connector, stop}, return_when=asyncio.FIRST_COMPLETED)
        code = 0
        if connector.done():
            stop.cancel()
            exc = connector.exception()
            if isinstance(exc, HubAuthError):
                logger.error("%s", exc)
            else:
                logger.error("the hub connection failed", exc_info=exc)
            code = 1
            self._force_stop.set()
        await self._shutdown()
        connector.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await connector
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        logger.info("stopped")
        return code

    def request_stop(self, interactive: bool = False) -> None:
        """Drain and stop. A repeated interactive request (Ctrl-C twice) skips the wait for
        running tasks; a supervisor's SIGTERM after a Ctrl-C does not."""
        if not self._stop.is_set():
            logger.info("stopping: no new tasks, waiting for %d running", len(self._runs))
            self._stop.set()
            self._interactive_stop = interactive
        elif interactive and self._interactive_stop:
            logger.warning("stopping now: running tasks are interrupted")
            self._force_stop.set()

    async def _shutdown(self) -> None:
        await self._start_draining()
        await self._wait_for_runs(self.config.drain_timeout)
        if self._runs:
            logger.warning("interrupting %d task(s) still running", len(self._runs))
            for run in list(self._runs.values()):
                run.stop_error = ERR_STOPPED
                run.interrupt()
            await asyncio.wait([run.task for run in self._runs.values()], timeout=STOP_GRACE)
        for run in list(self._runs.values()):  # agents that ignored the interruption
            result = self._finish(run, protocol.FAILED, "", ERR_STOPPED)
            if result is not None:
                await self._send(protocol.encode("task.finished", **result))
        if self._ws is not None and not self._outbox_empty.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ACK_WAIT):
                    await self._outbox_empty.wait()
        if len(self._outbox):
            logger.warning(
                "%d result(s) not acknowledged, kept for the next start", len(self._outbox)
            )

    async def _wait_for_runs(self, timeout: float) -> None:
        """Until no run is left, ``timeout`` seconds pass, or a second stop signal."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        forced = asyncio.create_task(self._force_stop.wait())
        try:
            while self._runs and not forced.done() and loop.time() < deadline:
                await asyncio.wait(
                    {run.task for run in self._runs.values()} | {forced},
                    timeout=deadline - loop.time(),
                    return_when=asyncio.FIRST_COMPLETED,
                )
        finally:
            forced.cancel()

    # Connection.

    async def _connect_forever(self) -> None:
        failures = 0
        headers = {"Authorization": f"Bearer {self.config.token}"}
        endpoint = 0
        while True:
            self._welcomed = False
            ws_url, origin = self._endpoints[endpoint]
            try:
                async with connect(
                    ws_url,
                    origin=origin,
                    additional_headers=headers,
                    max_size=protocol.MAX_FRAME_BYTES,
                    open_timeout=10,
                ) as ws:
                    logger.info("connected to %s", ws_url)
                    await self._session(ws)
                    logger.warning("the hub closed the connection (code %s)", ws.close_code)
            except InvalidStatus as exc:
                status = exc.response.status_code
                body = exc.response.body.decode("utf-8", "replace").strip()[:200]
                if status in (401, 403):
                    detail = f"HTTP {status}: {body}" if body else f"HTTP {status}"
                    raise HubAuthError(ERR_AUTH.format(detail=detail)) from None
                logger.warning("the hub refused the connection: HTTP %s %s", status, body)
            except ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd.code in AUTH_CLOSE_CODES:
                    detail = f"close code {exc.rcvd.code}: {exc.rcvd.reason or 'no reason given'}"
                    raise HubAuthError(ERR_AUTH.format(detail=detail)) from None
                if exc.rcvd is not None and exc.rcvd.code == protocol.CLOSE_CONFLICT:
                    logger.warning(WARN_IDENTITY_IN_USE, exc.rcvd.reason or "no reason given")
                else:
                    logger.warning("connection to the hub lost: %s", exc)
            except (OSError, TimeoutError, WebSocketException) as exc:
                logger.warning("cannot reach the hub at %s: %r", ws_url, exc)
            if self._welcomed:  # a connection the hub accepted resets the backoff
                failures = 0
            # The next hub, if there are several: one that went away is failed over from,
            # and back to once it is the survivor. The backoff grows per round of them all.
            endpoint = (endpoint + 1) % len(self._endpoints)
            delay = backoff_delay(failures // len(self._endpoints), self.config.max_backoff)
            failures += 1
            logger.info("reconnecting in %.1fs", delay)
            await asyncio.sleep(delay)

    async def _session(self, ws: ClientConnection) -> None:
        """Serve one connection until it closes."""
        # Set first: a run finishing while hello and the outbox go out must not be dropped.
        self._ws = ws
        heartbeats: asyncio.Task[None] | None = None
        try:
            await ws.send(
                protocol.encode(
                    "hello",
                    name=self.config.name,
                    version=__version__,
                    labels=self._labels,
                    capacity=self._capacity,
                    agents=list(self.config.agents),
                    running=[{"session_id": s, "attempt": a} for s, a in self._runs],
                    capabilities=list(self.config.capabilities),
                    models=list(self.config.models),
                )
            )
            heartbeats = asyncio.create_task(self._heartbeats(), name="heartbeats")
            if self._stopping:
                await ws.send(protocol.encode("draining"))
            # Results finished while the hub was away (or before a restart).
            for result in self._outbox.results():
                await ws.send(protocol.encode("task.finished", **result))
            for run in list(self._runs.values()):
                if not run.accepted_sent:  # accepted while the hub was away
                    await self._send_accepted(run)
                run.reporter.resend()
            async for text in ws:
                try:
                    message = protocol.parse_frame(text, direction=protocol.HUB)
                except protocol.ProtocolError as exc:
                    logger.warning("dropping a malformed frame from the hub: %s", exc)
                    continue
                await self._handle(message)
        finally:
            self._ws = None
            if heartbeats is not None:
                heartbeats.cancel()

    async def _send(self, frame: str) -> bool:
        """Send when connected; False when the frame could not go (the caller keeps it)."""
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
            cpu, mem = self._load.sample()
            await self._send(
                protocol.encode(
                    "heartbeat",
                    running=len(self._runs),
                    cpu=cpu,
                    mem=mem,
                    peak=self._stats.peak_running,
                    free_memory_mb=self._load.free_memory_mb(),
                    free_disk_mb=self._load.free_disk_mb(),
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
            self._on_ack((message["session_id"], message["attempt"]))
        elif kind == "node.config":
            # Two changes sent at once may arrive out of order: an older one changes nothing.
            if message["generation"] >= self._generation:
                self._apply_config(message)
            await self._send(self._state_frame())
        elif kind == "welcome":
            self._welcomed = True
            await self._send(self._state_frame())
            # Never beat slower than the hub expects, whatever --heartbeat says.
            interval = min(self.config.heartbeat, message["heartbeat_interval"])
            self._heartbeat_interval = max(MIN_HEARTBEAT, interval)
            logger.info("welcomed by the hub as %s", message["node"])
        elif kind == "error":
            logger.warning("the hub reports an error: %s: %s", message["code"], message["message"])

    async def _start_draining(self) -> None:
        if not self._stopping:
            self._stopping = True
            await self._send(protocol.encode("draining"))
            await self._send(self._state_frame())

    def _apply_config(self, message: protocol.Message) -> None:
        changes = {
            name: (getattr(self, "_" + name), message[name])
            for name in ("cordoned", "draining", "capacity", "labels")
            if getattr(self, "_" + name) != message[name]
        }
        self._cordoned, self._draining = message["cordoned"], message["draining"]
        self._capacity, self._labels = message["capacity"], dict(message["labels"])
        self._generation = message["generation"]
        for name, (old, new) in changes.items():
            logger.info("the hub set %s: %s -> %s", name, old, new)

    def _state_frame(self) -> str:
        """What this node is now, by its own account (sent after applying a node.config)."""
        return protocol.encode(
            "node.state",
            generation=self._generation,
            cordoned=self._cordoned,
            draining=self._draining,
            stopping=self._stopping,
            capacity=self._capacity,
            labels=self._labels,
            running=len(self._runs),
        )

    async def _on_assign(self, message: protocol.Message) -> None:
        sid, attempt, agent_id = message["session_id"], message["attempt"], message["agent_id"]
        key = (sid, attempt)
        if key in self._runs:
            logger.info("repeated assignment of running %s attempt %d", sid, attempt)
            await self._send_accepted(self._runs[key])
            return
        result = self._outbox.get(key) or self._acked.get(key)
        if result is not None:
            # Accept again so a hub waiting for acceptance stops waiting, then the result.
            logger.info("repeated assignment of finished %s attempt %d", sid, attempt)
            await self._send(protocol.encode("task.accepted", session_id=sid, attempt=attempt))
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
            agent_id,
            sid,
            model=message.get("model", ""),
            on_progress=reporter.on_progress,
            on_log=reporter.on_log,
        )
        run = Run(sid, attempt, agent_id, message["input"], ctx, reporter)
        # Registered before any await, so the next assignment already counts this one.
        self._runs[key] = run
        self._stats.run_started()
        run.task = asyncio.create_task(self._execute(run), name=f"run-{sid}-{attempt}")

    def _rejection(self, agent_id: str) -> str:
        if self._stopping:
            return REJECT_STOPPING
        if self._draining:
            return REJECT_DRAINING
        if self._cordoned:
            return REJECT_CORDONED
        if agent_id not in self.config.agents:
            agents = ", ".join(self.config.agents)
            return REJECT_UNKNOWN_AGENT.format(agent=agent_id, agents=agents)
        if len(self._runs) >= self._capacity:
            return REJECT_AT_CAPACITY.format(running=len(self._runs), capacity=self._capacity)
        return ""

    def _on_cancel(self, session_id: str) -> None:
        for run in [r for r in self._runs.values() if r.session_id == session_id]:
            logger.info("cancelling %s attempt %d", run.session_id, run.attempt)
            run.ctx.cancel()
            if run.cancel_timer is None:
                loop = asyncio.get_running_loop()
                run.cancel_timer = loop.call_later(CANCEL_GRACE, run.interrupt)

    def _on_ack(self, key: ResultKey) -> None:
        result = self._outbox.ack(key)
        if result is not None:
            # Kept a while to answer a repeated assignment without running it again.
            self._acked[key] = result
            while len(self._acked) > REMEMBERED_RESULTS:
                self._acked.popitem(last=False)
        if not len(self._outbox):
            self._outbox_empty.set()

    # Running.

    async def _send_accepted(self, run: Run) -> None:
        frame = protocol.encode("task.accepted", session_id=run.session_id, attempt=run.attempt)
        run.accepted_sent = await self._send(frame) or run.accepted_sent

    async def _execute(self, run: Run) -> None:
        await self._send_accepted(run)
        logger.info("running %s attempt %d (%s)", run.session_id, run.attempt, run.agent_id)
        pump = asyncio.create_task(run.reporter.pump())
        run.agent_task = asyncio.create_task(self._runner.run(run.input, run.ctx))
        await asyncio.wait({run.agent_task})
        pump.cancel()
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            await run.reporter.flush()  # the final progress goes before task.finished
        except Exception:  # a reporting failure must never cost the result or the slot
            logger.exception("reporting the progress of %s failed", run.session_id)
        result = self._finish(run, *outcome(run))
        if result is not None:
            await self._send(protocol.encode("task.finished", **result))

    def _finish(self, run: Run, status: str, output: str, error: str) -> dict[str, Any] | None:
        """Free the run's slot and put its result in the outbox, at once; None when the run
        was already finished."""
        if self._runs.pop(run.key, None) is None:
            return None
        if run.cancel_timer is not None:
            run.cancel_timer.cancel()
        result = result_of(run, status, output, error)
        self._outbox_empty.clear()
        self._outbox.add(result)
        self._stats.run_finished()
        logger.info("%s attempt %d %s", run.session_id, run.attempt, status)
        return result
