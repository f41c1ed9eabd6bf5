"""What an agent sees of its run: progress, log, usage, and cooperative cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import Callable, Mapping
from typing import Any

from executor_core.types import ExecutionCancelled

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str], None]
LogCallback = Callable[[list[str]], None]

ERR_CANCELLED = "session {session_id} was cancelled"
USAGE_FIELDS = ("model", "prompt_tokens", "completion_tokens", "first_token_ms", "total_ms")


class AgentContext:
    """One run's handle, given to ``AgentRunner.run``.

    Callbacks must not block (the hub enqueues). An agent may report from any thread (a plain
    ``def`` agent runs in a worker thread): a report made off the thread that created the
    context is handed to that thread's event loop, so callbacks always run there, in order.
    A failing callback is logged and ignored: reporting must never fail the run.
    ``cancel()`` may be called from any thread.
    """

    def __init__(
        self,
        agent_id: str,
        session_id: str,
        *,
        model: str = "",
        on_progress: ProgressCallback | None = None,
        on_log: LogCallback | None = None,
    ) -> None:
        self.agent_id = agent_id
        self.session_id = session_id
        # The model the task asked for ("" = the agent's default).
        self.model = model
        self._on_progress = on_progress
        self._on_log = on_log
        self._pct = 0.0
        self._message = ""
        self._usage: dict[str, Any] = {}
        self._cancelled = False
        self._event = asyncio.Event()
        self._thread_event = threading.Event()  # what a plain ``def`` agent waits on
        self._lock = threading.Lock()
        try:
            self._home: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._home = None
        self._home_thread = threading.get_ident()
        # The loop a waiter waits on, so cancel() from another thread can wake it safely.
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
        with self._lock:
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
    def usage(self) -> dict[str, Any]:
        """What the run consumed (model, token counts, latencies), as recorded so far."""
        return dict(self._usage)

    def record_usage(self, usage: Mapping[str, Any] | None = None, /, **fields: Any) -> None:
        """Record (merge) the run's usage; it goes with the result onto the attempt."""
        merged = {**(usage or {}), **fields}
        with self._lock:
            self._usage.update({k: v for k, v in merged.items() if v is not None})

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        """Ask the agent to stop; waiters wake and ``check_cancelled`` raises from now on."""
        self._cancelled = True
        self._thread_event.set()
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

    def wait(self, seconds: float) -> None:
        """``sleep`` for a plain ``def`` agent (blocks its worker thread, not the loop)."""
        self.check_cancelled()
        self._thread_event.wait(max(0.0, seconds))
        self.check_cancelled()

    async def wait_cancelled(self) -> None:
        """Return once the run is cancelled."""
        self._loop = asyncio.get_running_loop()
        await self._event.wait()

    def _call(self, callback: Callable[..., None], *args: object) -> None:
        home = self._home
        if home is not None and threading.get_ident() != self._home_thread:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
                home.call_soon_threadsafe(self._call_here, callback, args)
            return
        self._call_here(callback, args)

    def _call_here(self, callback: Callable[..., None], args: tuple[object, ...]) -> None:
        try:
            callback(*args)
        except Exception:
            logger.exception("progress/log callback failed for session %s", self.session_id)
