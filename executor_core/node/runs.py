"""One assignment executing on a node, and how its end becomes a ``task.finished`` result."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from executor_core.agents import AgentContext
from executor_core.node import protocol
from executor_core.node.reporting import RunReporter, clip
from executor_core.node.state import ResultKey
from executor_core.types import ExecutionCancelled

logger = logging.getLogger("hivemind.node")

ERR_OUTPUT_TOO_LARGE = "output is {size} characters, over the protocol limit of {limit}"


@dataclass(eq=False)
class Run:
    """One assignment being executed."""

    session_id: str
    attempt: int
    agent_id: str
    input: str
    ctx: AgentContext
    reporter: RunReporter
    task: asyncio.Task[None] | None = None  # the node's wrapper around the agent
    agent_task: asyncio.Task[str] | None = None
    accepted_sent: bool = False  # task.accepted reached an open connection
    stop_error: str = ""  # set when the node itself ends the run (shutdown)
    cancel_timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def key(self) -> ResultKey:
        return (self.session_id, self.attempt)

    def interrupt(self) -> None:
        """Stop the agent whether it cooperates or not."""
        self.ctx.cancel()
        if self.agent_task is not None:
            self.agent_task.cancel()


def outcome(run: Run) -> tuple[str, str, str]:
    """(status, output, error) of a run whose agent task is done."""
    task = run.agent_task
    assert task is not None and task.done()
    exc = None if task.cancelled() else task.exception()
    if not task.cancelled() and exc is None:
        output = str(task.result())
        if len(output) > protocol.MAX_PAYLOAD_CHARS:
            limit = protocol.MAX_PAYLOAD_CHARS
            error = ERR_OUTPUT_TOO_LARGE.format(size=len(output), limit=limit)
            return protocol.FAILED, clip(output, limit), error
        return protocol.SUCCEEDED, output, ""
    if run.stop_error:
        return protocol.FAILED, "", run.stop_error
    if task.cancelled() or isinstance(exc, ExecutionCancelled):
        return protocol.CANCELLED, "", str(exc or "") or "cancelled"
    logger.info("%s attempt %d failed: %r", run.session_id, run.attempt, exc, exc_info=exc)
    return protocol.FAILED, "", str(exc) or type(exc).__name__


def result_of(run: Run, status: str, output: str, error: str) -> dict[str, Any]:
    """The fields of the run's ``task.finished`` frame, cut to fit the protocol's limits."""
    result = {
        "session_id": run.session_id,
        "attempt": run.attempt,
        "status": status,
        "output": output,
        "error": clip(error, protocol.MAX_ERROR_CHARS),
        "usage": run.ctx.usage,
    }
    try:
        protocol.encode("task.finished", **result)
    except protocol.ProtocolError:
        # Only an output of mostly escaped characters can overflow the frame here.
        result["output"] = clip(output, protocol.MAX_FRAME_BYTES // 8)
    return result
