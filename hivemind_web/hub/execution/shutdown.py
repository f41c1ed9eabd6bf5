"""Graceful stop (DESIGN §13). On SIGTERM the hub process stops taking work, lets its local
runs finish for up to ``HIVEMIND_SHUTDOWN_GRACE`` seconds, fails those still running "hub
stopped" (their team's policy decides what happens next), gives up what it held (claimed
attempts, node connections, its lease) so other hubs take over at once, and only then lets
the server stop. A second SIGTERM skips the rest of the wait.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import TYPE_CHECKING

from hivemind_web.hub.execution.reaper import release_instance
from hivemind_web.hub.models import HubInstance

if TYPE_CHECKING:
    from hivemind_web.hub.execution.runtime import Runtime

log = logging.getLogger(__name__)
HUB_STOPPED = "hub stopped"
POLL = 0.1


def _end_lease(instance: str) -> None:
    HubInstance.objects.filter(name=instance).delete()


async def drain(runtime: Runtime, grace: float, hurry: asyncio.Event | None = None) -> int:
    """Stop taking work, wait for the local runs, fail what is left. Returns how many runs
    were failed."""
    runtime.stopping = True
    local = runtime.local
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    log.warning(
        "stopping: no new work; waiting up to %gs for %d local run(s)",
        grace,
        local.running + local.queued,
    )
    while local.running + local.queued and loop.time() < deadline:
        if hurry is not None and hurry.is_set():
            break
        await asyncio.sleep(POLL)
    left = local.running + local.queued
    if left:
        log.warning("failing %d local run(s) still in progress: %s", left, HUB_STOPPED)
    # The last results are written before anything is released (the writer keeps order).
    await runtime.writer.run(release_instance, runtime.instance, HUB_STOPPED)
    runtime.stopped = True  # what the cancelled runs report now counts for nothing
    local.cancel_all()
    await runtime.writer.run(_end_lease, runtime.instance)
    return left


def install(runtime: Runtime, loop: asyncio.AbstractEventLoop) -> None:
    """Take SIGTERM from the server (daphne's reactor), drain, then hand it back."""
    previous = signal.getsignal(signal.SIGTERM)
    hurry = asyncio.Event()

    async def stop() -> None:
        try:
            await drain(runtime, runtime.cfg["SHUTDOWN_GRACE"], hurry)
        except Exception:
            log.exception("the graceful stop failed; stopping anyway")
        loop.remove_signal_handler(signal.SIGTERM)
        signal.signal(signal.SIGTERM, previous)
        os.kill(os.getpid(), signal.SIGTERM)

    def on_sigterm() -> None:
        if runtime.stopping:
            hurry.set()
        else:
            runtime.spawn(stop())

    try:
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    except (RuntimeError, ValueError):  # not the main thread: the server keeps its own
        log.warning("cannot take SIGTERM here: a stop will not wait for local runs")
