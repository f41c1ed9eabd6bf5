"""How an agent's ``run`` is called, so that nothing it does can stall its host (DESIGN §12).

- ``async def run`` runs on the host's event loop (it must not block it);
- a plain ``def run`` runs in a worker thread of its own;
- ``isolation = "process"`` (declared by the agent, or the host's default) runs it in a child
  process (``executor_core.agents.child``), which is ended with its whole process group on
  cancel, timeout or when the host stops.

An agent may also declare ``timeout`` (seconds): past it the run fails, and a child process
is ended. The host's heartbeats, cancels and progress never wait for an agent.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import json
import os
import pickle
import sys
import threading
from collections.abc import Callable
from typing import Any

from executor_core.agents.context import AgentContext
from executor_core.agents.processes import KILL_GRACE, die_with_parent, end_group, read_lines
from executor_core.types import AgentFailure, ExecutionCancelled

INLINE = "inline"
PROCESS = "process"
ISOLATIONS = (INLINE, PROCESS)

CANCEL_GRACE = 2.0  # seconds a cancelled child gets to stop by itself before it is ended
STDERR_TAIL = 20  # lines of a child's stderr kept to explain its death
MESSAGE_LIMIT = 64 * 1024 * 1024  # longest frame a child may send (an output, JSON-escaped)

ERR_ISOLATION = "agent {name!r}: isolation must be one of {choices}, got {value!r}"
ERR_TIMEOUT_VALUE = "agent {name!r}: timeout must be a positive number of seconds, got {value!r}"
ERR_TIMED_OUT = "agent {name!r} timed out after {seconds:g}s"
ERR_NOT_PICKLABLE = "agent {name!r} cannot run in a child process: it cannot be pickled ({exc})"
ERR_CHILD_DIED = "agent {name!r} process exited with status {code} before finishing{tail}"
ERR_BAD_MESSAGE = "agent process sent an unreadable report: {line!r}"
ERR_NOT_A_STRING = "agent {name!r} returned {type}, expected str"


def isolation_of(runner: object, default: str = INLINE) -> str:
    """The isolation ``runner`` runs with: its own ``isolation`` attribute, else ``default``."""
    value = getattr(runner, "isolation", None) or default
    if value not in ISOLATIONS:
        name = getattr(runner, "name", type(runner).__name__)
        choices = ", ".join(ISOLATIONS)
        raise ValueError(ERR_ISOLATION.format(name=name, choices=choices, value=value))
    return value


def timeout_of(runner: object) -> float | None:
    """The runner's ``timeout`` in seconds, or None for none."""
    value = getattr(runner, "timeout", None)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        name = getattr(runner, "name", type(runner).__name__)
        raise ValueError(ERR_TIMEOUT_VALUE.format(name=name, value=value))
    return float(value)


def check_runner(runner: object) -> None:
    """Raise ValueError when the runner's declared isolation or timeout is invalid."""
    isolation_of(runner)
    timeout_of(runner)


async def invoke(runner: Any, input: str, ctx: AgentContext, *, isolation: str = INLINE) -> str:
    """Run ``runner`` on ``input`` the way it asks to be run (see the module docstring)."""
    mode = isolation_of(runner, isolation)
    seconds = timeout_of(runner)
    name = getattr(runner, "name", ctx.agent_id)
    try:
        async with asyncio.timeout(seconds):
            if mode == PROCESS:
                return await run_in_process(runner, input, ctx)
            return await run_inline(runner, input, ctx)
    except TimeoutError:
        ctx.cancel()  # a worker thread that checks for it stops
        raise AgentFailure(ERR_TIMED_OUT.format(name=name, seconds=seconds)) from None


async def run_inline(runner: Any, input: str, ctx: AgentContext) -> Any:
    """An async ``run`` on this loop, a plain one in a worker thread."""
    run = runner.run
    if inspect.iscoroutinefunction(run):
        return await run(input, ctx)
    return await run_in_thread(run, input, ctx)


async def run_in_thread(fn: Callable[[str, AgentContext], Any], input: str, ctx: AgentContext):
    """``fn(input, ctx)`` in a new daemon thread; the loop only awaits its result.

    A thread cannot be killed: when the await is cancelled the context is cancelled (an
    agent that checks it stops) and the thread is left to end by itself. An agent that must
    be stoppable whatever it does declares ``isolation = "process"``.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, exc: BaseException | None) -> None:
        if future.done():
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    def work() -> None:
        result, error = None, None
        try:
            result = fn(input, ctx)
        except BaseException as exc:  # handed to the awaiting task, like a coroutine's
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name=f"agent-{ctx.session_id}", daemon=True).start()
    try:
        return await future
    except asyncio.CancelledError:
        ctx.cancel()
        raise


# -- process isolation: the parent side ------------------------------------------------------


async def run_in_process(runner: Any, input: str, ctx: AgentContext) -> str:
    """Run ``runner`` in a child process and relay its reports to ``ctx``.

    The child gets the pickled runner and the input on stdin, reports on a pipe of its own
    (one JSON object a line: progress, log, and a final result or error) and may print:
    its stdout lines go to the task's log. A cancel asks the child to stop, and ends its
    process group when it has not within CANCEL_GRACE; so does this coroutine's own
    cancellation (at once), and its end in any other way.
    """
    name = getattr(runner, "name", ctx.agent_id)
    try:
        payload = base64.b64encode(pickle.dumps(runner)).decode("ascii")
    except Exception as exc:
        raise AgentFailure(ERR_NOT_PICKLABLE.format(name=name, exc=exc)) from None
    header = {
        # The child imports the runner's module from where this process found it.
        "path": list(sys.path),
        "runner": payload,
        "agent_id": ctx.agent_id,
        "session_id": ctx.session_id,
        "model": ctx.model,
        "input": input,
    }
    read_fd, write_fd = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "executor_core.agents.child",
            str(write_fd),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            pass_fds=(write_fd,),
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=MESSAGE_LIMIT)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
    )
    stdout = asyncio.create_task(read_lines(proc.stdout, lambda line: ctx.log(line), keep=0))
    stderr = asyncio.create_task(read_lines(proc.stderr, lambda line: None, keep=STDERR_TAIL))
    messages = asyncio.create_task(_relay(reader, ctx))
    cancelled = asyncio.create_task(ctx.wait_cancelled())
    try:
        proc.stdin.write(json.dumps(header).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await proc.stdin.drain()
        await asyncio.wait({messages, cancelled}, return_when=asyncio.FIRST_COMPLETED)
        if not messages.done():  # cancelled: ask first, end it when it does not listen
            with contextlib.suppress(ConnectionError, RuntimeError):
                proc.stdin.write(b"cancel\n")
                await proc.stdin.drain()
            done, _ = await asyncio.wait({messages}, timeout=CANCEL_GRACE)
            if not done:
                raise ExecutionCancelled(f"session {ctx.session_id} was cancelled")
        final = messages.result()
    finally:
        cancelled.cancel()
        with contextlib.suppress(Exception):
            proc.stdin.close()
        if messages.done():  # it said its last word: a moment to exit by itself
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(proc.wait()), KILL_GRACE)
        else:
            messages.cancel()
        await end_group(proc)
        transport.close()
        # The group is gone, so both pipes are at their end.
        outputs = await asyncio.gather(stdout, stderr, return_exceptions=True)
    tail = outputs[1] if not isinstance(outputs[1], BaseException) else []
    if final is None:
        shown = "\n".join(tail).strip()
        raise AgentFailure(
            ERR_CHILD_DIED.format(
                name=name, code=proc.returncode, tail=f": {shown}" if shown else ""
            )
        )
    if final.get("usage"):
        ctx.record_usage(final["usage"])
    if "result" in final:
        return final["result"]
    if final.get("cancelled"):
        raise ExecutionCancelled(final.get("error") or "cancelled")
    raise AgentFailure(final.get("error") or "the agent failed")


async def _relay(reader: asyncio.StreamReader, ctx: AgentContext) -> dict[str, Any] | None:
    """Pass the child's reports to ``ctx``; return its final message (None: it died)."""
    while True:
        line = await reader.readline()
        if not line:
            return None
        try:
            message = json.loads(line)
        except ValueError:
            raise AgentFailure(ERR_BAD_MESSAGE.format(line=line[:200])) from None
        if "progress" in message:
            pct, text = message["progress"]
            ctx.progress(pct, text)
        elif "log" in message:
            ctx.log(*message["log"])
        else:
            return message
