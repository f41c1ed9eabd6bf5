"""The live board stream at ``/ws/board/``.

A client with ``hub.view_task`` joins the ``board`` group (and the log group of each task it
watches). It gets a full snapshot on connect and whenever it asks, then frames: every
FRAME_INTERVAL, the latest state of what changed, numbered so the client can tell a gap and
ask for a snapshot again.

Client → server: ``{"type": "snapshot", ...request}`` (the request keys are the query
parameters of the socket URL: ``tasks``, ``status``, ``team``, ``node``, ``route``, ``q``,
``page``, ``history``, ``watch``), and ``{"type": "ping"}``.
Server → client: ``snapshot``, ``frame``, ``pong`` and ``error``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from executor_core import bounded_json
from hivemind_web.dashboard import frames
from hivemind_web.dashboard.selectors import board_snapshot, parse_request
from hivemind_web.dashboard.summary import PAGES, SUMMARY
from hivemind_web.hub.api.permissions import VIEW
from hivemind_web.hub.broadcast import BOARD_GROUP, task_group
from hivemind_web.hub.consumers.direct import DirectDispatch

log = logging.getLogger(__name__)

CLOSE_FORBIDDEN = 4403


@database_sync_to_async
def _can_view(user: Any) -> bool:
    return bool(user is not None and user.is_authenticated and user.has_perm(VIEW))


def _query(scope: dict[str, Any]) -> dict[str, list[str]]:
    return parse_qs(scope.get("query_string", b"").decode("latin-1"))


class BoardConsumer(DirectDispatch, AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        if not await _can_view(self.scope.get("user")):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.seq = 0
        self.buffer = frames.FrameBuffer()
        self.page = frames.PageTracker()
        # Snapshots and frames go out one at a time, in sequence order.
        self.send_lock = asyncio.Lock()
        self.flusher: asyncio.Task[None] | None = None
        self.watching: set[str] = set()
        self.request = parse_request(_query(self.scope))
        await self.channel_layer.group_add(BOARD_GROUP, self.channel_name)
        await self._watch(self.request.watch)
        await self.accept()
        await self.send_snapshot()

    async def disconnect(self, code: int) -> None:
        flusher = getattr(self, "flusher", None)
        if flusher is not None:
            flusher.cancel()
        if not hasattr(self, "watching"):
            return  # refused before joining anything
        await self.channel_layer.group_discard(BOARD_GROUP, self.channel_name)
        await self._watch(())

    async def receive(self, text_data: str | None = None, bytes_data: Any = None) -> None:
        # Malformed or binary input gets an error reply, never a crashed consumer.
        try:
            content = bounded_json.loads(text_data) if text_data else None
        except ValueError:  # TooDeep included
            content = None
        await self.receive_json(content)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "snapshot":
            self.request = parse_request(content)
            await self._watch(self.request.watch)
            await self.send_snapshot()
        elif kind == "ping":
            await self.send_json({"type": "pong"})
        else:
            await self.send_json({"type": "error", "detail": f"unknown message type {kind!r}"})

    async def _watch(self, session_ids: tuple[str, ...] | list[str]) -> None:
        wanted = set(session_ids)
        for sid in self.watching - wanted:
            await self.channel_layer.group_discard(task_group(sid), self.channel_name)
        for sid in wanted - self.watching:
            await self.channel_layer.group_add(task_group(sid), self.channel_name)
        self.watching = wanted

    # Channel-layer handlers, named after the message types broadcast.py sends.

    async def board_events(self, message: dict[str, Any]) -> None:
        added = False
        for event in message.get("events") or ():
            added = self.buffer.add(event.get("kind", ""), event.get("data") or {}) or added
        if added:
            self._schedule_flush()

    async def task_log(self, event: dict[str, Any]) -> None:
        sid = str(event.get("session_id", ""))
        if sid in self.watching:
            self.buffer.add_log(sid, list(event.get("lines") or []))
            self._schedule_flush()

    # Sending.

    def _schedule_flush(self) -> None:
        if self.flusher is None or self.flusher.done():
            self.flusher = asyncio.get_running_loop().create_task(self._flush_at_tick())

    async def _flush_at_tick(self) -> None:
        await asyncio.sleep(frames.next_tick(time.monotonic()))
        async with self.send_lock:
            # From here on, new events schedule the next frame.
            self.flusher = None
            changes = self.buffer.take()
            if changes is None:
                return
            if changes.overflow:
                await self._send_snapshot_locked()
                return
            summary = page = None
            if changes.tasks or changes.nodes:
                try:
                    summary = await SUMMARY.get(changes.last_event_at)
                except Exception:  # a busy database costs the summary, never the frame
                    log.exception("board summary failed")
            query = self.request.tasks
            if changes.tasks and query is not None:
                # The count, the page's rows and their order come from the database, read
                # once per frame for every client showing the same filters and page.
                try:
                    read = await PAGES.get(query, changes.last_event_at)
                    sent = {t["session_id"] for t in changes.tasks}
                    page = self.page.delta(read, sent)
                except Exception:
                    log.exception("board task page failed")
            self.seq += 1
            await self.send(text_data=frames.encode_frame(changes.frame(self.seq, summary, page)))

    async def send_snapshot(self) -> None:
        async with self.send_lock:
            await self._send_snapshot_locked()

    async def _send_snapshot_locked(self) -> None:
        # Everything buffered so far is in the database the snapshot reads.
        self.buffer.clear()
        snapshot = await database_sync_to_async(board_snapshot)(self.request)
        if "tasks" in snapshot:
            self.page.reset(snapshot["tasks"])
        self.seq += 1
        snapshot["seq"] = self.seq
        await self.send_json(snapshot)
