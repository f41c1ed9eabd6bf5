"""Sending a bound task to its node and waiting until the node accepts it.

The task is already ``scheduled`` in the database (persisted before the assignment is sent,
DESIGN §6). The assignment travels through the channel layer to the node's consumer, in this
hub process or another. Acceptance is learnt from the consumer directly when it runs here,
else from the database. No acceptance within the timeout, or a rejection, is a
scheduling-phase failure: the slot is given back and GolemExecutor falls back to local.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from executor_core.executors import DispatchError
from executor_core.scheduling.types import Placement
from executor_core.types import ExecuteRequest, ExecutionResult, TaskStatus
from hivemind_web.hub.broadcast import node_group
from hivemind_web.hub.models import Task
from hivemind_web.hub.services.tasks import task_unbind

if TYPE_CHECKING:
    from hivemind_web.hub.execution.runtime import Runtime

POLL_EVERY = 0.5
ERR_TIMEOUT = "node {node} did not accept the task within {timeout:g}s"
ERR_REJECTED = "node {node} rejected the task: {reason}"


def _accepted_in_db(session_id: str, attempt: int) -> bool:
    return Task.objects.filter(
        session_id=session_id, attempts=attempt, status=TaskStatus.RUNNING
    ).exists()


class NodeDispatcher:
    def __init__(self, runtime: Runtime, timeout: float) -> None:
        self.runtime = runtime
        self.timeout = timeout
        self._waiters: dict[tuple[str, int], asyncio.Future[str | None]] = {}

    def waiting(self, session_id: str, attempt: int) -> bool:
        return (session_id, attempt) in self._waiters

    def resolve(self, session_id: str, attempt: int, rejection: str | None = None) -> None:
        """The node accepted (``rejection`` None) or refused the assignment."""
        future = self._waiters.get((session_id, attempt))
        if future is not None and not future.done():
            future.set_result(rejection)

    async def dispatch(self, placement: Placement, request: ExecuteRequest) -> ExecutionResult:
        sid, node = request.session_id, placement.node
        attempt = self.runtime.attempt_of(sid)
        key = (sid, attempt)
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._waiters[key] = future
        try:
            await get_channel_layer().group_send(
                node_group(node),
                {
                    "type": "task.assign",
                    "session_id": sid,
                    "agent_id": request.agent_id,
                    "input": request.input,
                    "attempt": attempt,
                },
            )
            try:
                rejection = await asyncio.wait_for(self._wait(future, sid, attempt), self.timeout)
            except TimeoutError:
                rejection = ERR_TIMEOUT.format(node=node, timeout=self.timeout)
            else:
                rejection = rejection and ERR_REJECTED.format(node=node, reason=rejection)
        finally:
            self._waiters.pop(key, None)
        if rejection is None:
            return ExecutionResult(sid, TaskStatus.RUNNING, "golem", node=node)
        unbound = await self.runtime.writer.run(
            task_unbind, session_id=sid, attempt=attempt, reason=rejection
        )
        if not unbound and await database_sync_to_async(_accepted_in_db)(sid, attempt):
            # It accepted just as we gave up: keep it rather than run it twice.
            return ExecutionResult(sid, TaskStatus.RUNNING, "golem", node=node)
        await self.runtime.send_cancel(node, sid)
        raise DispatchError(rejection)

    async def _wait(self, future: asyncio.Future[str | None], sid: str, attempt: int) -> str | None:
        while True:
            done, _ = await asyncio.wait({future}, timeout=POLL_EVERY)
            if done:
                return future.result()
            # Another hub process may have received the acceptance.
            if await database_sync_to_async(_accepted_in_db)(sid, attempt):
                return None
