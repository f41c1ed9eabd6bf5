"""Sending a bound task to its node and waiting until the node accepts it.

The task is already ``scheduled`` in the database (persisted before the assignment is sent,
DESIGN §6). The assignment travels through the channel layer to the node's consumer, in this
hub process or another; it names this process's control channel (``reply_to``), so the
consumer that hears the node accept tells the waiting dispatcher directly, wherever it runs:
nobody polls the database. No acceptance within the timeout, or a rejection, is a
scheduling-phase failure: the slot is given back and GolemExecutor falls back to local.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from executor_core.executors import DispatchError
from executor_core.scheduling.types import Placement
from executor_core.types import ExecuteRequest, ExecutionResult, TaskStatus
from hivemind_web.hub.broadcast import node_group
from hivemind_web.hub.execution.writer import GroupWriter
from hivemind_web.hub.models import Task
from hivemind_web.hub.services.tasks import task_unbind

ERR_TIMEOUT = "node {node} did not accept the task within {timeout:g}s"
ERR_REJECTED = "node {node} rejected the task: {reason}"

GroupSend = Callable[[str, dict[str, Any]], Awaitable[None]]


def _accepted_in_db(session_id: str, attempt: int) -> bool:
    return Task.objects.filter(
        session_id=session_id, attempts=attempt, status=TaskStatus.RUNNING
    ).exists()


class NodeDispatcher:
    def __init__(
        self,
        *,
        writer: GroupWriter,
        group_send: GroupSend,
        timeout: float,
        reply_to: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.writer = writer
        self.group_send = group_send
        self.timeout = timeout
        self.reply_to = reply_to
        self._waiters: dict[tuple[str, int], asyncio.Future[str | None]] = {}

    def waiting(self, session_id: str, attempt: int) -> bool:
        return (session_id, attempt) in self._waiters

    def resolve(self, session_id: str, attempt: int, rejection: str | None = None) -> bool:
        """The node accepted (``rejection`` None) or refused the assignment. False when
        nobody here waits for it."""
        future = self._waiters.get((session_id, attempt))
        if future is None:
            return False
        if not future.done():
            future.set_result(rejection)
        return True

    async def dispatch(self, placement: Placement, request: ExecuteRequest) -> ExecutionResult:
        sid, node, attempt = request.session_id, placement.node, request.attempt
        key = (sid, attempt)
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._waiters[key] = future
        try:
            await self.group_send(
                node_group(node),
                {
                    "type": "task.assign",
                    "session_id": sid,
                    "agent_id": request.agent_id,
                    "input": request.input,
                    "attempt": attempt,
                    "model": request.model,
                    "reply_to": self.reply_to(),
                },
            )
            try:
                rejection = await asyncio.wait_for(future, self.timeout)
            except TimeoutError:
                rejection = ERR_TIMEOUT.format(node=node, timeout=self.timeout)
            else:
                rejection = rejection and ERR_REJECTED.format(node=node, reason=rejection)
        finally:
            self._waiters.pop(key, None)
        if rejection is None:
            return ExecutionResult(sid, TaskStatus.RUNNING, "golem", node=node)
        unbound = await self.writer.run(
            task_unbind, session_id=sid, attempt=attempt, reason=rejection
        )
        if not unbound and await self.writer.run(_accepted_in_db, sid, attempt):
            # It accepted just as we gave up: keep it rather than run it twice.
            return ExecutionResult(sid, TaskStatus.RUNNING, "golem", node=node)
        await self.group_send(node_group(node), {"type": "task.cancel", "session_id": sid})
        raise DispatchError(rejection)
