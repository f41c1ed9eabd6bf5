"""The child process of an agent run with ``isolation = "process"`` (see ``isolation``).

``python -m executor_core.agents.child FD``: reads one JSON line on stdin (the parent's
import path, the pickled runner, the ids, the model and the input), runs the agent, and
writes its reports to file descriptor FD, one JSON object a line: ``{"progress": [pct,
message]}``, ``{"log": [...]}`` and last ``{"result": ..., "usage": ...}`` or ``{"error": ...,
"cancelled": bool}``. A later ``cancel`` line on stdin cancels the run's context. Its stdout
is the agent's own (the parent logs it), so the reports have a descriptor of their own.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pickle
import signal
import sys
import threading
from typing import Any, TextIO

from executor_core.agents.context import AgentContext
from executor_core.agents.isolation import ERR_NOT_A_STRING, run_inline
from executor_core.types import ExecutionCancelled


class Reports:
    """The report pipe, written from any thread of the child."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, **message: Any) -> None:
        line = json.dumps(message, ensure_ascii=False) + "\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()


def _listen_for_cancel(loop: asyncio.AbstractEventLoop, ctx: AgentContext) -> None:
    for line in sys.stdin:
        if line.strip() == "cancel":
            loop.call_soon_threadsafe(ctx.cancel)
    # Our stdin closed: the parent has what it wanted, or it died (even by SIGKILL). Either
    # way nobody waits for this group any more: end it, what the agent started included.
    os.killpg(os.getpgrp(), signal.SIGKILL)


async def _run(header: dict[str, Any], reports: Reports) -> None:
    sys.path[:0] = [entry for entry in header.get("path", []) if entry not in sys.path]
    runner = pickle.loads(base64.b64decode(header["runner"]))
    ctx = AgentContext(
        header["agent_id"],
        header["session_id"],
        model=header.get("model", ""),
        on_progress=lambda pct, message: reports.send(progress=[pct, message]),
        on_log=lambda lines: reports.send(log=lines),
    )
    loop = asyncio.get_running_loop()
    threading.Thread(target=_listen_for_cancel, args=(loop, ctx), daemon=True).start()
    try:
        output = await run_inline(runner, header["input"], ctx)
    except ExecutionCancelled as exc:
        reports.send(error=str(exc) or "cancelled", cancelled=True, usage=ctx.usage)
    except Exception as exc:
        reports.send(error=str(exc) or type(exc).__name__, cancelled=False, usage=ctx.usage)
    else:
        if isinstance(output, str):
            reports.send(result=output, usage=ctx.usage)
        else:
            error = ERR_NOT_A_STRING.format(name=ctx.agent_id, type=type(output).__name__)
            reports.send(error=error, cancelled=False, usage=ctx.usage)


def main(argv: list[str]) -> int:
    reports = Reports(os.fdopen(int(argv[1]), "w", encoding="utf-8"))
    header = json.loads(sys.stdin.readline())
    asyncio.run(_run(header, reports))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
