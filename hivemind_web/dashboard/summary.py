"""The fleet summary and the task pages shared by every board client of one process.

Each frame carries the summary, but fifty clients must not run fifty count queries every
100 ms. A summary read that *started* after a frame's newest event already reflects that
frame's changes (events are published after commit), so one read serves every frame whose
events arrived before it began.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from channels.db import database_sync_to_async

from hivemind_web.dashboard.selectors import task_page
from hivemind_web.hub.selectors import fleet_summary

# Distinct task queries (filters and page) whose reads are shared; the least recently asked
# one is forgotten past this.
MAX_PAGE_QUERIES = 256


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


class KeyedCache:
    """One SummaryCache per key (here: per task query), so boards showing the same filters
    and page share one read per frame, whatever their number."""

    def __init__(self, load: Callable[[Any], dict[str, Any]], limit: int = MAX_PAGE_QUERIES):
        self._load = load
        self._limit = limit
        self._caches: OrderedDict[Hashable, SummaryCache] = OrderedDict()

    async def get(self, key: Hashable, fresh_after: float) -> dict[str, Any]:
        cache = self._caches.pop(key, None)
        if cache is None:
            cache = SummaryCache(lambda: self._load(key))
        self._caches[key] = cache
        while len(self._caches) > self._limit:
            self._caches.popitem(last=False)
        return await cache.get(fresh_after)


SUMMARY = SummaryCache()
PAGES = KeyedCache(task_page)
