"""The hub's event loop, reachable from the synchronous service layer.

Local agents, dispatch waits and channel-layer sends all live on one asyncio loop: the loop
daphne serves on (bound by the ASGI entry point on the first connection). A process without a
server (a management command, a test calling services directly) gets a private loop in a daemon
thread instead, so services behave the same everywhere.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_private_thread: threading.Thread | None = None


def bind(loop: asyncio.AbstractEventLoop) -> bool:
    """Adopt ``loop`` (the server's) unless a live loop is bound already. True when adopted."""
    global _loop
    with _lock:
        if _loop is not None and not _loop.is_closed() and _loop.is_running():
            return False
        _loop = loop
        return True


def get() -> asyncio.AbstractEventLoop:
    """The hub loop, starting a private one when no server loop is bound."""
    global _loop, _private_thread
    with _lock:
        if _loop is not None and not _loop.is_closed() and _loop.is_running():
            return _loop
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        _private_thread = threading.Thread(target=run, name="hivemind-hub-loop", daemon=True)
        _private_thread.start()
        ready.wait()
        _loop = loop
        return loop


def in_loop() -> bool:
    """True when the caller runs on the hub loop's own thread."""
    try:
        return asyncio.get_running_loop() is _loop
    except RuntimeError:
        return False


def submit(coro: Coroutine[Any, Any, Any]) -> Future[Any] | asyncio.Task[Any]:
    """Run ``coro`` on the hub loop from any thread, without waiting for it.

    The coroutine starts in an empty context: inheriting the caller's would tie it to the
    request that started it (asgiref keeps the request's thread executor in a context
    variable, and that executor is gone once the response is sent).
    """
    loop = get()
    if in_loop():
        return loop.create_task(coro, context=contextvars.Context())
    return contextvars.Context().run(asyncio.run_coroutine_threadsafe, coro, loop)


def call(coro: Coroutine[Any, Any, Any], timeout: float | None = None) -> Any:
    """Run ``coro`` on the hub loop and wait for its result (never from the loop itself)."""
    if in_loop():
        raise RuntimeError("call() would deadlock on the hub loop; await the coroutine instead")
    return asyncio.run_coroutine_threadsafe(coro, get()).result(timeout)
