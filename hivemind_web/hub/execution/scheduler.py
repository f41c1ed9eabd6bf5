"""The hub's scheduler: the pure ClusterState decides, the database binds (DESIGN §3).

ClusterState is a snapshot kept in step with the Node table (incrementally, by ``updated_at``,
with a full resync every few seconds). A decision is bound with one conditional UPDATE
(``running < capacity`` on a ready node); losing that race to another hub process re-reads the
node and decides again, a bounded number of times, and only then is a scheduling failure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from channels.db import database_sync_to_async
from django.utils import timezone

from executor_core.scheduling import ClusterState, NodeInfo, Placement, ScheduleRequest
from executor_core.scheduling.types import SchedulingError
from hivemind_web.hub import selectors
from hivemind_web.hub.models import Node, Task
from hivemind_web.hub.services.tasks import task_bind

if TYPE_CHECKING:
    from hivemind_web.hub.execution.runtime import Runtime

FULL_SYNC_EVERY = 5.0
FULL_SYNC_UP_TO = 500
SYNC_OVERLAP = 5.0
ERR_BIND_CONFLICT = "bind conflict: node {node} filled up under us {n} times"
ERR_NOT_PENDING = "task is no longer pending"


def node_info(node: Node) -> NodeInfo:
    return NodeInfo(
        name=node.name,
        labels=dict(node.labels),
        capacity=node.capacity,
        running=node.running,
        ready=node.healthy,
        cordoned=node.cordoned or node.draining,
        agents=frozenset(node.agents),
    )


def _read_nodes(since: object | None) -> tuple[list[NodeInfo], list[str] | None]:
    """Changed nodes since ``since`` (all when None) and, on a full read, every name."""
    qs = Node.objects.all()
    if since is not None:
        qs = qs.filter(updated_at__gte=since)
    infos = [node_info(n) for n in qs]
    return infos, ([i.name for i in infos] if since is None else None)


def _placement_context(session_id: str, team: str | None) -> tuple[dict[str, int], list[str], str]:
    row = Task.objects.filter(session_id=session_id).values("excluded_nodes", "status").first()
    if row is None:
        return {}, [], "gone"
    return (selectors.team_nodes(team) if team else {}), row["excluded_nodes"], row["status"]


class HubScheduler:
    def __init__(self, runtime: Runtime, retries: int) -> None:
        self.runtime = runtime
        self.cluster = ClusterState()
        self.retries = retries
        self._synced_at: object | None = None
        self._full_at = 0.0
        self._lock = asyncio.Lock()

    async def sync(self) -> None:
        # A small fleet is re-read whole (one cheap query); a large one incrementally, with a
        # generous overlap: a write's updated_at is taken before its transaction commits.
        full = (
            len(self.cluster) <= FULL_SYNC_UP_TO
            or time.monotonic() - self._full_at > FULL_SYNC_EVERY
        )
        since = None if full else self._synced_at
        started = timezone.now() - timedelta(seconds=SYNC_OVERLAP)
        infos, names = await database_sync_to_async(_read_nodes)(since)
        for info in infos:
            self.cluster.upsert_node(info)
        if names is not None:
            known = set(names)
            for gone in [n.name for n in self.cluster.nodes() if n.name not in known]:
                self.cluster.remove_node(gone)
            self._full_at = time.monotonic()
        self._synced_at = started

    async def _request(self, request: ScheduleRequest) -> ScheduleRequest:
        team_nodes, excluded, status = await database_sync_to_async(_placement_context)(
            request.session_id, request.team_id
        )
        if status != "pending":
            raise SchedulingError(ERR_NOT_PENDING)
        hints = dataclasses.replace(
            request.hints, team_nodes=team_nodes, excluded_nodes=frozenset(excluded)
        )
        return dataclasses.replace(request, hints=hints)

    async def schedule(self, request: ScheduleRequest) -> Placement:
        # One decision at a time in this process, each seeing the binds before it: a
        # decision against a snapshot that misses an in-flight bind would pile tasks onto
        # one node. Other hub processes are kept honest by the conditional bind.
        async with self._lock:
            return await self._schedule(request)

    async def _schedule(self, request: ScheduleRequest) -> Placement:
        attempt = self.runtime.attempt_of(request.session_id)
        node = ""
        for _ in range(self.retries):
            await self.sync()
            placement = self.cluster.place(await self._request(request))
            # The database is the authority on running counts: drop the assumption and
            # re-read the node after the bind, won or lost.
            self.cluster.release(request.session_id)
            node = placement.node
            bound = await self.runtime.writer.run(
                task_bind,
                session_id=request.session_id,
                attempt=attempt,
                node_name=node,
                reason=placement.reason,
            )
            if bound:
                return placement
            self._full_at = 0.0  # lost a race: take a fresh look before deciding again
        raise SchedulingError(ERR_BIND_CONFLICT.format(node=node, n=self.retries))

    async def estimate(self, request: ScheduleRequest) -> float | None:
        """Load fraction of the node the scheduler would pick now (for ``auto``)."""
        await self.sync()
        try:
            placement = self.cluster.evaluate(await self._request(request))
        except SchedulingError:
            return None
        info = self.cluster.node(placement.node)
        return info.load if info is not None else None

    def release(self, session_id: str) -> None:
        self.cluster.release(session_id)
