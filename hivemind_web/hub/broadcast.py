"""Publishing hub changes to the channel-layer group ``board`` (the dashboard consumes it).

Messages are sent after the transaction commits, so a listener that re-reads the database
always sees the change it was told about. They are not sent one by one: a busy hub makes
hundreds of changes a second, and every group message costs a delivery per board client
(DESIGN §9). The outbox keeps the latest state per task and node and sends it as one
``board.events`` message just before each BOARD_TICK, the ticks on which every board client of
the process sends its frame: an event waits for one tick at most, not for a publish interval
and then for a tick. Other messages (log lines for a task page) ride along in the same flush.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from channels.layers import get_channel_layer
from django.db import transaction

from hivemind_web.hub.execution import loop as hub_loop

BOARD_GROUP = "board"
# Board clients send their frames on multiples of this (monotonic clock, see dashboard.frames).
BOARD_TICK = 0.1
# The outbox flushes this long before a tick, so its message is in the clients' buffers by then.
PUBLISH_LEAD = 0.02
# Events per group message: a backlog goes out in several moderate messages.
MAX_EVENTS_PER_MESSAGE = 500
log = logging.getLogger(__name__)


def node_group(name: str) -> str:
    """The group a node's consumer joins: where assignments and cancels for it go."""
    return f"node.{name}"


def task_group(session_id: str) -> str:
    """Per-task group for the task page's log stream."""
    return f"task.{session_id}"


def next_tick(now: float, interval: float = BOARD_TICK) -> float:
    """Seconds until the next multiple of ``interval``."""
    return interval - (now % interval)


def publish_delay(now: float, tick: float = BOARD_TICK, lead: float = PUBLISH_LEAD) -> float:
    """Seconds until the outbox should flush: ``lead`` before the next tick it can still make
    (at least a quarter of a lead from now)."""
    delay = next_tick(now, tick) - lead
    return delay if delay >= lead / 4 else delay + tick


class Outbox:
    """Changes waiting to be published; thread-safe (writers run on several threads)."""

    def __init__(self, tick: float = BOARD_TICK, lead: float = PUBLISH_LEAD) -> None:
        self.tick, self.lead = tick, lead
        self._lock = threading.Lock()
        self._events: dict[tuple[str, str], dict[str, Any]] = {}
        self._messages: list[tuple[str, dict[str, Any]]] = []
        self._scheduled = False

    def add_event(self, kind: str, key: str, data: dict[str, Any]) -> None:
        self.add_events(kind, [(key, data)])

    def add_events(self, kind: str, items: list[tuple[str, dict[str, Any]]]) -> None:
        """Changes of one kind, ``(key, data)`` each."""
        with self._lock:
            events = self._events  # (take() swaps it, under the lock)
            for key, data in items:
                # Re-insert: events go out in the order they last changed.
                events.pop((kind, key), None)
                events[(kind, key)] = {"kind": kind, "data": data}
            self._schedule_locked()

    def add_message(self, group: str, message: dict[str, Any]) -> None:
        with self._lock:
            self._messages.append((group, message))
            self._schedule_locked()

    def _schedule_locked(self) -> None:
        if self._scheduled:
            return
        self._scheduled = True
        hub_loop.submit(self._flush_later())

    def take(self) -> tuple[list[dict[str, Any]], list[tuple[str, dict[str, Any]]]]:
        with self._lock:
            events, self._events = list(self._events.values()), {}
            messages, self._messages = self._messages, []
            self._scheduled = False
        return events, messages

    async def _flush_later(self) -> None:
        await asyncio.sleep(publish_delay(time.monotonic(), self.tick, self.lead))
        await self.flush()

    async def flush(self) -> None:
        events, messages = self.take()
        layer = get_channel_layer()
        if layer is None:
            return
        for start in range(0, len(events), MAX_EVENTS_PER_MESSAGE):
            chunk = events[start : start + MAX_EVENTS_PER_MESSAGE]
            await _group_send(layer, BOARD_GROUP, {"type": "board.events", "events": chunk})
        for group, message in messages:
            await _group_send(layer, group, message)


OUTBOX = Outbox()


def publish(kind: str, data: dict[str, Any], key: str = "") -> None:
    """Tell the board about a change of ``kind`` (task, node, fallback_mode) after commit;
    of several changes to one ``key`` before the next flush, the latest wins."""
    transaction.on_commit(lambda: OUTBOX.add_event(kind, key, data))


def publish_many(kind: str, items: list[tuple[str, dict[str, Any]]]) -> None:
    """``publish`` for several changes of one kind, ``(key, data)`` each: one after-commit
    hook for them all (a writer batch publishes every task it changed)."""
    if items:
        transaction.on_commit(lambda: OUTBOX.add_events(kind, items))


def send_after_commit(group: str, message: dict[str, Any]) -> None:
    transaction.on_commit(lambda: OUTBOX.add_message(group, message))


async def _group_send(layer: Any, group: str, message: dict[str, Any]) -> None:
    try:
        await layer.group_send(group, message)
    except Exception:  # a full channel or a Redis hiccup must never break a transition
        log.exception("could not publish to %s", group)
