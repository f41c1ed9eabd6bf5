"""Coalescing one run's progress and log lines into frames for the hub.

An agent may report progress thousands of times a second; the hub wants a few frames a second
(DESIGN §4). The reporter keeps only the latest progress and a bounded buffer of log lines, and
a pump sends them at most every ``interval`` seconds. ``flush`` sends whatever is pending, so
the final progress always reaches the hub before the run's ``task.finished``. Frames that
cannot be sent (no connection) stay pending until ``resend`` after a reconnect.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Awaitable, Callable

from executor_core.node import protocol

PROGRESS_INTERVAL = 0.2  # at most five progress frames per second per run
MAX_BUFFERED_LINES = 1000  # older lines are dropped, and the drop is reported in the log

Send = Callable[[str], Awaitable[bool]]


def clip(text: str, limit: int, marker: str = "…") -> str:
    """``text`` cut to at most ``limit`` characters, ending with ``marker`` when cut."""
    return text if len(text) <= limit else text[: max(0, limit - len(marker))] + marker


class RunReporter:
    """Progress and log frames of one run. Create it on the event loop's thread."""

    def __init__(self, session_id: str, send: Send, *, interval: float = PROGRESS_INTERVAL):
        self.session_id = session_id
        self._send = send
        self._interval = interval
        self._latest: tuple[float, str] | None = None
        self._sent: tuple[float, str] | None = None
        self._lines: deque[str] = deque()
        self._dropped = 0
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()

    # Agent callbacks: an agent may call them from a worker thread.

    def on_progress(self, pct: float, message: str) -> None:
        self._on_loop(self._set_progress, pct, message)

    def on_log(self, lines: list[str]) -> None:
        self._on_loop(self._add_lines, lines)

    def _on_loop(self, fn: Callable[..., None], *args: object) -> None:
        if threading.get_ident() == self._thread:
            fn(*args)  # in order with the run's end, which a deferred call would not be
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _set_progress(self, pct: float, message: str) -> None:
        self._latest = (min(100.0, max(0.0, float(pct))), clip(message, protocol.MAX_MESSAGE_CHARS))
        self._changed.set()

    def _add_lines(self, lines: list[str]) -> None:
        for line in lines:
            self._lines.append(clip(line, protocol.MAX_LOG_LINE_CHARS))
        while len(self._lines) > MAX_BUFFERED_LINES:
            self._lines.popleft()
            self._dropped += 1
        self._changed.set()

    # Sending.

    async def pump(self) -> None:
        """Send pending frames as they come, at most every ``interval`` seconds. Runs until
        cancelled."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            await self.flush()
            await asyncio.sleep(self._interval)

    def resend(self) -> None:
        """After a reconnect: send the latest progress again, and any lines still pending."""
        self._sent = None
        if self._latest is not None or self._lines:
            self._changed.set()

    async def flush(self) -> None:
        """Send the pending log lines, then the latest progress if it was not sent yet."""
        async with self._lock:
            if self._dropped:
                self._lines.appendleft(f"[{self._dropped} log lines dropped by the node]")
                self._dropped = 0
            while self._lines:
                count = min(protocol.MAX_LOG_LINES, len(self._lines))
                batch = [self._lines.popleft() for _ in range(count)]
                frame = protocol.encode("task.log", session_id=self.session_id, lines=batch)
                if not await self._send(frame):
                    self._lines.extendleft(reversed(batch))  # kept for resend()
                    return
            latest = self._latest
            if latest is not None and latest != self._sent:
                frame = protocol.encode(
                    "task.progress", session_id=self.session_id, pct=latest[0], message=latest[1]
                )
                if await self._send(frame):
                    self._sent = latest
