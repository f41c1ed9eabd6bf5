"""Database work from the hub loop, in submission order.

Transitions of one task must land in the order they happened (started before progress before
finished). One worker drains a FIFO queue and runs each service call in Django's
database thread, so the event loop never blocks on the database and order is kept.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from channels.db import database_sync_to_async

log = logging.getLogger(__name__)


class OrderedWriter:
    def __init__(self) -> None:
        self._queue: (
            asyncio.Queue[tuple[Callable[..., Any], tuple, dict, asyncio.Future]] | None
        ) = None
        self._worker: asyncio.Task[None] | None = None

    def _ensure(self) -> asyncio.Queue:
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._drain(self._queue))
        return self._queue

    def enqueue(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> asyncio.Future:
        """Queue ``fn(*args, **kwargs)``; the future resolves with its result. Loop thread only."""
        future = asyncio.get_running_loop().create_future()
        self._ensure().put_nowait((fn, args, kwargs, future))
        return future

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await self.enqueue(fn, *args, **kwargs)

    async def _drain(self, queue: asyncio.Queue) -> None:
        while True:
            fn, args, kwargs, future = await queue.get()
            try:
                result = await database_sync_to_async(fn)(*args, **kwargs)
            except Exception as exc:
                log.exception("hub write %s failed", getattr(fn, "__name__", fn))
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(result)
