"""Per-client batching of board events into frames (DESIGN §9).

Daphne delivers a few thousand messages a second, so a board client gets one frame per
FRAME_INTERVAL holding the latest state of each task and node that changed, never one message
per event. The buffer is plain data: the consumer owns the timing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hivemind_web.dashboard.selectors import lean_task
from hivemind_web.hub.broadcast import BOARD_TICK
from hivemind_web.hub.broadcast import next_tick as next_tick  # when the clients flush

# Every client of a process flushes on the same ticks, so one summary query serves them all;
# the hub's outbox publishes just before each (hub.broadcast).
FRAME_INTERVAL = BOARD_TICK
# Past this many changed tasks in one interval, a fresh snapshot is cheaper for the client
# than a frame it has to merge row by row.
MAX_FRAME_TASKS = 1000
MAX_FRAME_LOG_LINES = 500


class _ByIdentity:
    """Values made once per object, found by the object's identity. Each entry holds its
    object, so an id is never mistaken for another's; emptied whole past ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._memo: dict[int, tuple[Any, Any]] = {}

    def get(self, obj: Any, make: Callable[[Any], Any]) -> Any:
        hit = self._memo.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        if len(self._memo) >= self.limit:
            self._memo.clear()
        value = make(obj)
        self._memo[id(obj)] = (obj, value)
        return value


class SharedTasks:
    """The board form of a task event, and its JSON text, made once per process.

    Every board client of a process receives the same event objects (the embedded channel
    layer shares them; see ``hub.layers``) and flushes on the same tick, so the same task
    goes out in every client's frame: trimmed and encoded once, not once per client (with 50
    boards the encoding alone was a sixth of the hub loop).
    """

    def __init__(self, limit: int = 4096) -> None:
        self._lean = _ByIdentity(limit)
        self._text = _ByIdentity(limit)

    def lean(self, data: dict[str, Any]) -> dict[str, Any]:
        return self._lean.get(data, lean_task)

    def text(self, lean: dict[str, Any]) -> str:
        return self._text.get(lean, json.dumps)


SHARED = SharedTasks()


def encode_frame(frame: dict[str, Any], shared: SharedTasks = SHARED) -> str:
    """``json.dumps(frame)``, its task list from the shared texts (key order aside)."""
    rest = json.dumps({k: v for k, v in frame.items() if k != "tasks"})
    tasks = ", ".join(shared.text(t) for t in frame.get("tasks", ()))
    return f'{rest[:-1]}, "tasks": [{tasks}]}}'


@dataclass
class Changes:
    tasks: list[dict[str, Any]]
    nodes: list[dict[str, Any]]
    fallback_mode: dict[str, Any] | None
    logs: dict[str, list[str]]
    # When the newest event arrived: a summary read after this reflects every change here.
    last_event_at: float

    @property
    def overflow(self) -> bool:
        return len(self.tasks) > MAX_FRAME_TASKS

    def frame(
        self, seq: int, summary: dict[str, Any] | None, page: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        frame: dict[str, Any] = {
            "type": "frame",
            "seq": seq,
            "tasks": self.tasks,
            "nodes": self.nodes,
            "logs": self.logs,
        }
        if self.fallback_mode is not None:
            frame["fallback_mode"] = self.fallback_mode
        if summary is not None:
            frame["summary"] = summary
        if page is not None:
            frame["page"] = page
        return frame


class PageTracker:
    """What one client holds of its task page, so a frame carries only what changed there.

    The client never counts or filters by itself (DESIGN §14): every frame that changes tasks
    brings the server's count and the page's order; rows the client has not seen yet come
    with their data, rows it has are kept current by the frame's task list.
    """

    def __init__(self) -> None:
        self.order: list[str] = []
        self.shape: tuple[int, int, int] = (0, 0, 0)

    def reset(self, page: dict[str, Any]) -> None:
        self.order = [t["session_id"] for t in page["results"]]
        self.shape = (page["count"], page["page"], page["pages"])

    def delta(self, page: dict[str, Any], sent: set[str]) -> dict[str, Any] | None:
        """The change from what the client holds to ``page`` (rows in ``sent``, this frame's
        task list, need not come again), or None when nothing changed."""
        order = [t["session_id"] for t in page["results"]]
        shape = (page["count"], page["page"], page["pages"])
        if order == self.order and shape == self.shape:
            return None
        held = set(self.order) | sent
        rows = [t for t in page["results"] if t["session_id"] not in held]
        self.order, self.shape = order, shape
        count, number, pages = shape
        return {"count": count, "page": number, "pages": pages, "order": order, "rows": rows}


@dataclass
class FrameBuffer:
    """Changes received since the last frame; the latest state per task and node wins."""

    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    fallback_mode: dict[str, Any] | None = None
    logs: dict[str, list[str]] = field(default_factory=dict)
    last_event_at: float = 0.0

    def add(self, kind: str, data: dict[str, Any], now: float | None = None) -> bool:
        """Record one board event; False when its kind is unknown (ignored)."""
        if kind == "task" and data.get("session_id"):
            sid = str(data["session_id"])
            # Re-insert so the frame lists tasks in the order they last changed.
            self.tasks.pop(sid, None)
            self.tasks[sid] = data
        elif kind == "node" and data.get("name"):
            self.nodes[str(data["name"])] = data
        elif kind == "fallback_mode":
            self.fallback_mode = data
        else:
            return False
        self.last_event_at = time.monotonic() if now is None else now
        return True

    def add_log(self, session_id: str, lines: list[Any], now: float | None = None) -> None:
        buffered = self.logs.setdefault(session_id, [])
        buffered += [str(line) for line in lines]
        del buffered[:-MAX_FRAME_LOG_LINES]
        self.last_event_at = time.monotonic() if now is None else now

    def __bool__(self) -> bool:
        return bool(self.tasks or self.nodes or self.logs or self.fallback_mode is not None)

    def take(self) -> Changes | None:
        """Empty the buffer into a Changes, or None when nothing changed."""
        if not self:
            return None
        changes = Changes(
            # Trimmed once per frame, not once per event: a burst repeats the same tasks.
            tasks=[SHARED.lean(data) for data in self.tasks.values()],
            nodes=list(self.nodes.values()),
            fallback_mode=self.fallback_mode,
            logs=self.logs,
            last_event_at=self.last_event_at,
        )
        self.clear()
        return changes

    def clear(self) -> None:
        self.tasks, self.nodes, self.logs = {}, {}, {}
        self.fallback_mode = None
