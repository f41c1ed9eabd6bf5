"""The hub side of the node protocol (DESIGN §6) at ``/ws/nodes/``.

A node authenticates with its bearer token in the handshake, says ``hello``, then streams
heartbeats and task reports. Every frame is validated; a bad or unauthorised one gets an
``error`` frame and is dropped, and the connection stays up. A node may only report on tasks
bound to it. An identity has one live connection at a time (DESIGN §13): a second one is
refused with close code 4409, and reports count only from the connection holding it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils import timezone

from executor_core.node import protocol
from hivemind_web.hub.broadcast import node_group
from hivemind_web.hub.consumers.direct import DirectDispatch
from hivemind_web.hub.execution.runtime import ensure_started
from hivemind_web.hub.models import Task
from hivemind_web.hub.services import nodes as node_services
from hivemind_web.hub.services import tasks as task_services
from hivemind_web.hub.services.node_state import node_config
from hivemind_web.hub.services.orchestrator import tasks_fail_each
from hivemind_web.serving import scope_is_secure

log = logging.getLogger(__name__)
ERR_INSECURE = "this hub takes nodes over wss:// (HIVEMIND_HTTPS): use an https:// hub URL"

# After a hello, a node re-sends the results it buffered; give them time to land before
# calling its missing tasks lost.
RECONCILE_DELAY = 3.0
GROUP_RENEW_EVERY = 600.0
NOT_RUNNING_AFTER_RECONNECT = (
    "node lost (the task was not running on the node after it reconnected)"
)


def _bearer(scope: dict[str, Any]) -> str:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    return ""


def _session_uuid(session_id: str) -> uuid.UUID | None:
    """The hub names tasks by UUID: anything else names no task (and is no lookup)."""
    try:
        return uuid.UUID(session_id)
    except ValueError:
        return None


def _close_reason(text: str) -> str:
    # A close frame's reason is at most 123 bytes; the error frame before it has it all.
    return text.encode("utf-8")[:123].decode("utf-8", "ignore")


def _owned(session_id: str, node_name: str) -> Task | None:
    key = _session_uuid(session_id)
    if key is None:
        return None
    return Task.objects.filter(session_id=key, node__name=node_name).first()


def _reconcile(node_name: str, reported: set[str]) -> tuple[list[str], list[str]]:
    """Compare a hello's running list with the database.

    Returns (session ids the node should stop: not its tasks or already ended here,
    session ids the hub believes run there but the node does not report).
    """
    to_cancel = []
    for sid in reported:
        key = _session_uuid(sid)
        task = Task.objects.filter(session_id=key).select_related("node").first() if key else None
        if task is None or task.is_terminal or task.node is None or task.node.name != node_name:
            to_cancel.append(sid)
    missing = [
        str(sid)
        for sid in Task.objects.filter(node__name=node_name, status="running").values_list(
            "session_id", flat=True
        )
        if str(sid) not in reported
    ]
    return to_cancel, missing


def _fail_missing(node_name: str, session_ids: list[str], since: Any) -> None:
    tasks = Task.objects.filter(
        session_id__in=session_ids, node__name=node_name, status="running", updated_at__lt=since
    )
    tasks_fail_each(tasks, error=NOT_RUNNING_AFTER_RECONNECT, actor=node_name)


class NodeConsumer(DirectDispatch, AsyncWebsocketConsumer):
    node_name: str | None = None
    hello_done = False
    epoch = 0  # of the connection holding the identity, once this one does

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.assigned: set[str] = set()  # tasks known to be bound to this node
        # Tasks this node was told to drop: their last reports are expected, and ignored.
        self.released: set[str] = set()
        # Where to tell that the node accepted: the control channel of the assigning hub.
        self.reply_to: dict[str, str | None] = {}
        self.group_joined_at = 0.0
        self.last_frame_at = time.monotonic()
        # The node refused an assignment since it last accepted one (it is backed off).
        self.refused = False

    async def connect(self) -> None:
        self.runtime = await ensure_started()
        if settings.SECURE_SSL_REDIRECT and not scope_is_secure(self.scope):
            # A hub behind TLS takes no node over plain ws://: its token would travel in clear.
            await self.accept()
            await self.send_frame("error", code="insecure", message=ERR_INSECURE)
            await self.close(code=protocol.CLOSE_FORBIDDEN)
            return
        node = await self.runtime.write(node_services.node_authenticate, _bearer(self.scope))
        if node is None:
            await self.close()  # before accept: the handshake is refused with 403
            return
        await self.accept()  # the refusal below needs an open socket to carry its reason
        claim = await self.runtime.connections.claim(node.name, self.channel_name, node.token_hash)
        if claim.refusal:
            log.warning("node %s: refused a second connection", node.name)
            await self.send_frame("error", code="identity_in_use", message=claim.refusal)
            await self.close(code=protocol.CLOSE_CONFLICT, reason=_close_reason(claim.refusal))
            return
        self.node_name, self.epoch = node.name, claim.epoch
        await self.channel_layer.group_add(node_group(node.name), self.channel_name)
        self.group_joined_at = time.monotonic()

    async def disconnect(self, code: int) -> None:
        if self.node_name:
            await self.channel_layer.group_discard(node_group(self.node_name), self.channel_name)
            await self.runtime.connections.release(self.channel_name)
            await self.runtime.write(node_services.node_disconnected, name=self.node_name)

    @property
    def current(self) -> bool:
        """Whether this connection still holds its node's identity."""
        return self.runtime.connections.holds(self.channel_name, self.epoch)

    async def send_frame(self, type_: str, **fields: Any) -> None:
        await self.send(text_data=protocol.encode(type_, **fields))

    async def reject(self, code: str, message: str) -> None:
        log.warning("node %s: %s: %s", self.node_name, code, message)
        await self.send_frame("error", code=code, message=message)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.node_name is None:
            return  # refused: closing
        self.last_frame_at = time.monotonic()
        if not self.current:
            await self.reject("superseded", "this connection no longer holds the node's identity")
            return
        if text_data is None:
            await self.reject("bad_frame", "frames must be JSON text")
            return
        try:
            message = protocol.parse_frame(text_data, direction="node")
        except protocol.ProtocolError as exc:
            await self.reject(exc.code, exc.message)
            return
        kind, fields = message.type, dict(message.fields)
        if not self.hello_done and kind != "hello":
            await self.reject("hello_first", "send hello before anything else")
            return
        handler = getattr(self, "on_" + kind.replace(".", "_"), None)
        if handler is None:
            await self.reject("unsupported", f"the hub does not take {kind!r} frames")
            return
        try:
            result = handler(**fields)
            if asyncio.iscoroutine(result):
                await result
        except Exception:  # a bug must cost one frame, never the connection
            log.exception("node %s: handling %s failed", self.node_name, kind)
            await self.reject("internal", f"the hub could not process {kind!r}")

    # Node → hub --------------------------------------------------------------------------

    async def on_hello(
        self,
        name: str,
        version: str,
        labels: dict,
        capacity: int,
        agents: list,
        running: list,
        capabilities: list,
        models: list,
    ) -> None:
        if name != self.node_name:
            await self.reject("wrong_node", f"this token belongs to node {self.node_name!r}")
            await self.close(code=4403)
            return
        errors = node_services.validate_node_fields(labels=labels, capacity=capacity)
        if errors:
            await self.reject("bad_hello", "; ".join(f"{k}: {v}" for k, v in errors.items()))
            return
        hello_at = timezone.now()
        node = await self.runtime.write(
            node_services.node_connected,
            name=name,
            version=version,
            labels=labels,
            capacity=capacity,
            agents=agents,
            capabilities=capabilities,
            models=models,
        )
        self.hello_done = True
        await self.send_frame(
            "welcome", node=name, heartbeat_interval=self.runtime.cfg["HEARTBEAT_INTERVAL"]
        )
        # The hub's word on the node goes first: a node that restarted knows nothing of it.
        await self.send_frame("node.config", **node_config(node))
        reported = {str(item["session_id"]): item["attempt"] for item in running}
        to_cancel, missing = await self.runtime.write(_reconcile, name, set(reported))
        self.assigned |= set(reported) - set(to_cancel)
        for sid in to_cancel:
            await self.send_frame("task.cancel", session_id=sid)
        # A run the hub still thinks is only scheduled was accepted before the hub went away:
        # record the acceptance now rather than assign the task elsewhere a second time.
        for sid, attempt in reported.items():
            if sid not in to_cancel:
                self.on_task_accepted(sid, attempt)
        if missing:
            self.runtime.spawn(self._fail_missing_later(missing, hello_at))

    async def _fail_missing_later(self, missing: list[str], hello_at: Any) -> None:
        await asyncio.sleep(RECONCILE_DELAY)
        await self.runtime.write(_fail_missing, self.node_name, missing, hello_at)

    def on_heartbeat(
        self,
        running: int,
        cpu: float,
        mem: float,
        peak: int = 0,
        free_memory_mb: int | None = None,
        free_disk_mb: int | None = None,
    ) -> None:
        # Channel-layer groups forget their members after a day: renew ours now and then.
        if time.monotonic() - self.group_joined_at > GROUP_RENEW_EVERY:
            self.group_joined_at = time.monotonic()
            self.runtime.spawn(
                self.channel_layer.group_add(node_group(self.node_name), self.channel_name)
            )
        beat = {"time": timezone.now(), "running": running, "cpu": cpu, "mem": mem}
        beat.update(free_memory_mb=free_memory_mb, free_disk_mb=free_disk_mb)
        self.runtime.note_heartbeat(self.node_name, beat)

    # Reports are queued on the ordered writer and answered from a follow-up task, so a busy
    # database never stalls this socket: heartbeats behind a slow write would make a healthy
    # node look silent.

    def on_task_accepted(self, session_id: str, attempt: int) -> None:
        if _session_uuid(session_id) is None:
            self.runtime.spawn(
                self.reject("not_assigned", f"task {session_id!r} is not assigned to this node")
            )
            return
        if self.refused:  # it takes work again: its back-off is over
            self.refused = False
            self.runtime.write(node_services.node_accepting, name=self.node_name)
        written = self.runtime.write(
            task_services.task_mark_running,
            session_id=session_id,
            attempt=attempt,
            node_name=self.node_name,
            epoch=self.epoch,
            at=timezone.now(),
        )
        self.runtime.spawn(self._after_accepted(written, session_id, attempt))

    async def _after_accepted(self, written: Any, session_id: str, attempt: int) -> None:
        if await written or await self._is_running_here(session_id, attempt):
            self.assigned.add(session_id)
            await self.runtime.resolve_dispatch(
                session_id, attempt, self.reply_to.pop(session_id, None)
            )
        else:  # no longer ours (cancelled, timed out, forced local): stop it
            self.assigned.discard(session_id)
            await self.send_frame("task.cancel", session_id=session_id)

    async def _is_running_here(self, session_id: str, attempt: int) -> bool:
        task = await self.runtime.write(_owned, session_id, self.node_name)
        return task is not None and task.attempts == attempt and task.status == "running"

    async def on_task_rejected(self, session_id: str, attempt: int, reason: str) -> None:
        if session_id not in self.assigned:  # only the node it was sent to may refuse it
            await self.reject("not_assigned", f"task {session_id} was not assigned to this node")
            return
        self.assigned.discard(session_id)
        self.refused = True
        self.runtime.write(
            node_services.node_refused, name=self.node_name, session_id=session_id, reason=reason
        )
        await self.runtime.resolve_dispatch(
            session_id, attempt, self.reply_to.pop(session_id, None), reason
        )

    async def _authorised(self, session_id: str) -> bool:
        """Only tasks bound to this node; the set saves a database read per progress frame."""
        if session_id in self.assigned:
            return True
        if session_id in self.released:
            return False
        if await self.runtime.write(_owned, session_id, self.node_name) is not None:
            return True
        await self.reject("not_assigned", f"task {session_id} is not assigned to this node")
        return False

    async def on_task_progress(self, session_id: str, pct: float, message: str = "") -> None:
        if await self._authorised(session_id):
            self.runtime.report_progress(session_id, pct=pct, message=message, node=self.node_name)

    async def on_task_log(self, session_id: str, lines: list) -> None:
        if await self._authorised(session_id):
            self.runtime.report_progress(
                session_id, lines=[str(line) for line in lines], node=self.node_name
            )

    async def on_task_finished(
        self,
        session_id: str,
        attempt: int,
        status: str,
        output: str = "",
        error: str = "",
        usage: dict | None = None,
    ) -> None:
        written = None
        if await self._authorised(session_id):
            written = self.runtime.write(
                task_services.task_finish,
                session_id=session_id,
                attempt=attempt,
                status=status,
                output=output,
                error=error,
                node_name=self.node_name,
                epoch=self.epoch,
                usage=usage or {},
                at=timezone.now(),
                progress=self.runtime.take_progress(session_id),
            )
            self.assigned.discard(session_id)
        self.runtime.spawn(self._ack(written, session_id, attempt))

    async def _ack(self, written: Any, session_id: str, attempt: int) -> None:
        # Acknowledge once the result is durable, so the node may drop it from its outbox;
        # a refused report was answered with an error above and changed nothing.
        if written is not None:
            try:
                await written
            except Exception:
                # Not recorded (the database refused it): no ack, so the node keeps the
                # result, and closing the socket makes it reconnect and send it again.
                log.exception(
                    "node %s: could not record the result of %s", self.node_name, session_id
                )
                await self.reject("not_recorded", f"the result of {session_id} was not recorded")
                await self.close(code=1011)
                return
        await self.send_frame("ack", session_id=session_id, attempt=attempt)

    async def on_draining(self) -> None:
        await self.runtime.write(node_services.node_self_drain, name=self.node_name)

    async def on_node_state(self, **state: Any) -> None:
        await self.runtime.write(node_services.node_report_state, name=self.node_name, state=state)

    # Hub → node (channel-layer events for this node's group) -----------------------------

    async def task_assign(self, event: dict[str, Any]) -> None:
        if not self.current:
            return  # the connection holding the identity has it (no answer: not ours)
        try:
            frame = protocol.encode(
                "task.assign",
                session_id=event["session_id"],
                agent_id=event["agent_id"],
                input=event["input"],
                attempt=event["attempt"],
                model=event.get("model", ""),
            )
        except protocol.ProtocolError as exc:  # e.g. an input that encodes past the frame limit
            await self.runtime.resolve_dispatch(
                event["session_id"],
                event["attempt"],
                event.get("reply_to"),
                f"cannot be sent: {exc.message}",
            )
            return
        self.assigned.add(event["session_id"])
        self.reply_to[event["session_id"]] = event.get("reply_to")
        await self.send(text_data=frame)

    async def task_cancel(self, event: dict[str, Any]) -> None:
        # Whatever the node still reports on it is no longer about a task of this node's.
        self.assigned.discard(event["session_id"])
        self.released.add(event["session_id"])
        await self.send_frame("task.cancel", session_id=event["session_id"])

    async def node_configure(self, event: dict[str, Any]) -> None:
        await self.send_frame("node.config", **event["config"])

    async def connection_probe(self, event: dict[str, Any]) -> None:
        """Another connection of this identity asks whether this one is live."""
        idle = time.monotonic() - self.last_frame_at
        await self.channel_layer.send(
            event["reply_to"], {"type": "connection.alive", "idle": idle, "epoch": self.epoch}
        )

    async def connection_evict(self, event: dict[str, Any]) -> None:
        """This connection lost the identity (taken over, or its token rotated)."""
        log.warning("node %s: closing its connection: %s", self.node_name, event["reason"])
        await self.send_frame("error", code="connection_closed", message=event["reason"])
        await self.close(code=event["code"], reason=_close_reason(event["reason"]))
