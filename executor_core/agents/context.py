"""What an agent sees of its run: progress and log reporting, and cooperative cancellation."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

from executor_core.types import ExecutionCancelled

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str], None]
LogCallback = Callable[[list[str]], None]

ERR_CANCELLED = "session {session_id} was cancelled"


class AgentContext:
    """One run's handle, given to ``AgentRunner.run``.

    Callbacks are called synchronously from the agent's code, so they must not block (the hub
    enqueues). A failing callback is logged and ignored: reporting must never fail the run.
    ``cancel()`` may be called from any thread.
    """

    def __init__(
        self,
        agent_id: str,
        session_id: str,
        *,
        on_progress: ProgressCallback | None = None,
        on_log: LogCallback | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.session_id = session_id
        self._on_progress = on_progress
        self._on_log = on_log
        self._pct = 0.0
        self._message = ""
        self._cancelled = False
        self._event = asyncio.Event()
        # The loop a sleeper waits on, so cancel() from another thread can wake it safely.
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def pct(self) -> float:
        return self._pct

    @property
    def message(self) -> str:
        return self._message

    def progress(self, pct: float, message: str = "") -> None:
        """Report progress in percent, clamped to 0..100; it never goes backwards."""
        value = float(pct)
        if math.isnan(value):
            value = self._pct
        value = max(self._pct, min(100.0, max(0.0, value)))
        if value == self._pct and message == self._message:
            return
        self._pct, self._message = value, message
        if self._on_progress is not None:
            self._call(self._on_progress, value, message)

    def log(self, *lines: str) -> None:
        """Append log lines to the run's log."""
        if lines and self._on_log is not None:
            self._call(self._on_log, [str(line) for line in lines])

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        """Ask the agent to stop; ``sleep`` wakes and ``check_cancelled`` raises from now on."""
        self._cancelled = True
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is not None and loop is not running and not loop.is_closed():
            loop.call_soon_threadsafe(self._event.set)
        else:
            self._event.set()

    def check_cancelled(self) -> None:
        """Raise ExecutionCancelled when the run was cancelled."""
        if self._cancelled:
            raise ExecutionCancelled(ERR_CANCELLED.format(session_id=self.session_id))

    async def sleep(self, seconds: float) -> None:
        """Sleep, but raise ExecutionCancelled as soon as the run is cancelled."""
        self.check_cancelled()
        self._loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(max(0.0, seconds)):
                await self._event.wait()
        except TimeoutError:
            return
        self.check_cancelled()

    def _call(self, callback: Callable[..., None], *args: object) -> None:
        try:
            callback(*args)
        except Exception:
            logger.exception("progress/log callback failed for session %s", self.session_id)
