"""Coalescing of progress and log lines (DESIGN §4).

A chatty agent reports as often as it likes; the hub keeps the latest value per task and
writes (and broadcasts) at most once per flush interval. ``flush(session)`` writes a task's
pending figures at once; ``take(session)`` hands them to the caller, which writes them with the
task's terminal state: either way nothing final is ever dropped or overtaken.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hivemind_web.hub.execution.writer import GroupWriter
from hivemind_web.hub.services.tasks import task_record_progress


class ProgressCoalescer:
    def __init__(self, writer: GroupWriter, interval: float) -> None:
        self._writer = writer
        self._interval = interval
        self._pending: dict[str, dict[str, Any]] = {}
        self._task: asyncio.Task[None] | None = None

    def add(
        self,
        session_id: str,
        *,
        pct: float | None = None,
        message: str = "",
        lines: list[str] | None = None,
        node: str | None = None,
    ) -> None:
        """Note a report on the task's attempt running on ``node`` (None: locally); reports
        from anywhere else (a node the task was moved away from) are dropped on write."""
        entry = self._pending.setdefault(
            session_id, {"pct": None, "message": "", "lines": [], "node": node}
        )
        entry["node"] = node
        if pct is not None:
            entry["pct"], entry["message"] = pct, message
        if lines:
            entry["lines"].extend(lines)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        # Reports that arrive while a flush is being written wait for the next interval,
        # not for the next report: keep flushing while there is something to flush.
        while True:
            await asyncio.sleep(self._interval)
            batch, self._pending = self._pending, {}
            if not batch:
                return
            await self._writer.run(task_record_progress, updates=batch)

    async def flush(self, session_id: str) -> None:
        await self.flush_nowait(session_id)

    def take(self, session_id: str) -> dict[str, Any] | None:
        """The task's pending figures, no longer pending: for the caller to write with the
        task's end (``task_finish(progress=...)``), in the same statements."""
        return self._pending.pop(session_id, None)

    def flush_nowait(self, session_id: str) -> asyncio.Future:
        """Queue the task's pending figures now; what is queued after lands after them."""
        entry = self._pending.pop(session_id, None)
        if entry:
            return self._writer.enqueue(task_record_progress, updates={session_id: entry})
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done
