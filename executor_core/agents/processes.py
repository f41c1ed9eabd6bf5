"""Child processes of agents: each in its own process group, ended as a group.

An agent's child may start children of its own; ending only the child would leave them
running. Every child is therefore a session leader (``start_new_session``), and ending it
signals its whole group: SIGTERM first, SIGKILL for what is still there after a grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections import deque
from collections.abc import Callable

KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
READ_CHUNK = 64 * 1024
PR_SET_PDEATHSIG = 1

# Loaded here, not in the forked child, where loading a library could deadlock.
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None
except (OSError, AttributeError):
    _prctl = None


def die_with_parent() -> None:
    """``preexec_fn`` of an agent's child: the kernel kills it when its parent dies (Linux),
    so a node or hub killed with SIGKILL leaves no agent running in a session of its own."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def signal_group(pid: int, sig: int) -> bool:
    """Send ``sig`` to the process group led by ``pid``; False when nothing is left."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def end_group(proc: asyncio.subprocess.Process, grace: float = KILL_GRACE) -> None:
    """End ``proc`` and everything in its process group.

    A child that already exited may have left members of its group behind: they are
    signalled all the same. Being cancelled while waiting out the grace skips it (SIGKILL
    at once), so a caller's cancellation never leaves the group alive.
    """
    if proc.returncode is None:
        signal_group(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            signal_group(proc.pid, signal.SIGKILL)
            raise
    # Whatever the leader left in its group (it may have exited on its own).
    if signal_group(proc.pid, signal.SIGTERM):
        await asyncio.sleep(min(grace, 0.2))
    signal_group(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await proc.wait()


async def read_lines(
    stream: asyncio.StreamReader,
    on_line: Callable[[str], None],
    *,
    keep: int | None = None,
    collect: bytearray | None = None,
) -> deque[str]:
    """Call ``on_line`` with each decoded line of ``stream`` (newline removed) until EOF.

    Lines are split by this function, not by ``readline``, so a line longer than the
    stream's buffer limit is still read. Returns the last ``keep`` lines (all when None);
    ``collect`` receives every byte read.
    """
    kept: deque[str] = deque(maxlen=keep)
    pending = b""
    while True:
        chunk = await stream.read(READ_CHUNK)
        if not chunk:
            break
        if collect is not None:
            collect += chunk
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").rstrip("\r")
            kept.append(line)
            on_line(line)
    if pending:
        line = pending.decode("utf-8", "replace").rstrip("\r")
        kept.append(line)
        on_line(line)
    return kept
