"""The fleet summary shared by every board client of one process.

Each frame carries the summary, but fifty clients must not run fifty count queries every
100 ms. A summary read that *started* after a frame's newest event already reflects that
frame's changes (events are published after commit), so one read serves every frame whose
events arrived before it began.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from channels.db import database_sync_to_async

from hivemind_web.hub.selectors import fleet_summary


class SummaryCache:
    def __init__(self, load: Callable[[], dict[str, Any]] = fleet_summary) -> None:
        self._load = load
        self._value: dict[str, Any] | None = None
        self._value_started = float("-inf")
        self._pending: asyncio.Task[dict[str, Any]] | None = None
        self._pending_started = float("-inf")

    async def get(self, fresh_after: float) -> dict[str, Any]:
        """A summary read that started at or after ``fresh_after`` (a monotonic time)."""
        if self._value is not None and self._value_started >= fresh_after:
            return self._value
        loop = asyncio.get_running_loop()
        pending = self._pending
        if (
            pending is not None
            and not pending.done()
            and pending.get_loop() is loop
            and self._pending_started >= fresh_after
        ):
            return await asyncio.shield(pending)
        started = time.monotonic()
        task = loop.create_task(database_sync_to_async(self._load)())
        self._pending, self._pending_started = task, started
        try:
            # Shielded: one client going away must not cancel the read the others wait on.
            value = await asyncio.shield(task)
        finally:
            if self._pending is task:
                self._pending = None
        if started >= self._value_started:
            self._value, self._value_started = value, started
        return value


SUMMARY = SummaryCache()
