"""The hub's scheduler: the pure ClusterState decides in memory, the database binds (DESIGN §3).

A decision never waits for the database: ClusterState is kept current by events (binds and
releases of this process, node changes announced after commit) and resynced from the Node
table every RESYNC_EVERY seconds, so binds of other hub processes show up too. ``place``
assumes its decision at once, so the next decision sees it without a lock across a round
trip. The bind is one conditional UPDATE (``running < capacity`` on a ready node); losing it
(the snapshot was stale) re-reads that node and decides again, a bounded number of times.

Resync and binds go through the same ordered writer, and each call has a sequence number: a
snapshot read reflects exactly the binds queued before it, so binds still in flight are added
on top of what it read instead of being forgotten.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from datetime import datetime
from typing import Any

from django.utils import timezone

from executor_core.index import NodeTaskIndex
from executor_core.scheduling import ClusterState, NodeInfo, Placement, ScheduleRequest
from executor_core.scheduling.types import SchedulingError
from hivemind_web.hub.execution.writer import GroupWriter, retrieve
from hivemind_web.hub.intents import AttemptSpec
from hivemind_web.hub.models import Node, Task
from hivemind_web.hub.services.tasks import task_bind
from hivemind_web.hub.services.transitions import BIND_NODE_FULL, BOUND
from hivemind_web.hub.services.waiting import tasks_claim_waiting, waiting_count

log = logging.getLogger(__name__)

RESYNC_EVERY = 1.0
# A decision that finds no node against a picture older than this looks again, at the
# database's, before it counts as a scheduling failure (a node that joined through another
# hub process a moment ago must not be missed).
FRESH_FOR = 0.05
# Node changes announced together are applied in one resync.
RESYNC_DEBOUNCE = 0.02
# Heartbeat figures heard here win over the database's for this long (then the node may
# be heard by another hub process, which writes them).
RESOURCES_FRESH_FOR = 5.0
ERR_BIND_CONFLICT = "bind conflict: node {node} filled up under us {n} times"
ERR_NOT_PENDING = "task is no longer pending"


class NotRouted(Exception):
    """The attempt's routing, in flight while it was decided, was refused: cancelled or
    superseded meanwhile, or another hub process routed it first. Leave it alone."""


def node_info(node: Node, now: datetime | None = None) -> NodeInfo:
    # A node backed off for refusing work is not ready for new work until its back-off ends
    # (the periodic resync brings it back): a refusing node must not look empty.
    backed_off = node.backoff_until is not None and node.backoff_until > (now or timezone.now())
    return NodeInfo(
        name=node.name,
        labels=dict(node.labels),
        capacity=node.capacity,
        running=node.running,
        ready=node.healthy and not backed_off,
        cordoned=node.cordoned or node.draining,
        agents=frozenset(node.agents),
        capabilities=frozenset(node.capabilities),
        models=frozenset(node.models),
        # Heartbeat figures; None until a heartbeat reported them.
        cpu_percent=node.cpu if node.last_heartbeat is not None else None,
        free_memory_mb=node.free_memory_mb,
        free_disk_mb=node.free_disk_mb,
    )


def read_fleet() -> tuple[list[NodeInfo], list[tuple[str, str, str | None]], int]:
    """Every node, every bound task as (session id, node, team), and how many tasks wait."""
    now = timezone.now()
    infos = [node_info(n, now) for n in Node.objects.all()]
    bound = [
        (str(sid), node, team)
        for sid, node, team in Task.objects.filter(status__in=BOUND, node__isnull=False)
        .values_list("session_id", "node__name", "team__name")
        .iterator()
    ]
    return infos, bound, waiting_count()


def read_node(name: str) -> NodeInfo | None:
    node = Node.objects.filter(name=name).first()
    return node_info(node) if node is not None else None


class HubScheduler:
    def __init__(
        self,
        *,
        writer: GroupWriter,
        index: NodeTaskIndex,
        retries: int,
        cluster=None,
        owner: str = "",
    ) -> None:
        self.cluster: ClusterState = cluster or ClusterState()
        self.writer = writer
        self.owner = owner  # what this process's routings write as the attempt's owner
        self.index = index
        self.retries = retries
        # Binds queued and not yet answered: session id → (node, the bind's sequence number).
        self._binding: dict[str, tuple[str, int]] = {}
        self._synced = asyncio.Event()
        self._wanted = asyncio.Event()
        self._read: asyncio.Future[None] | None = None  # the latest resync, shared
        self.resyncs = 0
        self._synced_at = 0.0
        # Every agent some node advertises (as of the last resync).
        self.agents: frozenset[str] = frozenset()
        # Tasks in the wait queue, as of the last resync (plus what this process parked).
        self.waiting = 0
        # Called after each resync (the wait queue looks for room it can fill).
        self.on_resync: Any = None
        # Routings still in flight (session id → its future): a golem attempt's routing is
        # queued with no wait, so that its bind lands in the same batch (DESIGN §10); the
        # bind is conditional on it (it checks ``owner``), and nothing else happens to the
        # attempt before its outcome is known (``routed``).
        self.routing: dict[str, asyncio.Future] = {}
        # The latest heartbeat figures this process heard, newer than the database's.
        # (monotonic time, cpu, free memory, free disk) per node.
        self.resources: dict[str, tuple[float, float, int | None, int | None]] = {}

    # -- keeping the picture current -------------------------------------------------------

    def wake(self) -> None:
        """Node facts changed (announced after commit): resync soon. Loop thread only."""
        self._wanted.set()

    async def run(self) -> None:
        """Resync at once, then every RESYNC_EVERY seconds or soon after a change."""
        while True:
            try:
                await self.resync()
            except Exception:
                log.exception("scheduler resync failed")
            try:
                await asyncio.wait_for(self._wanted.wait(), RESYNC_EVERY)
                await asyncio.sleep(RESYNC_DEBOUNCE)
            except TimeoutError:
                pass

    async def resync(self) -> None:
        """Bring the picture up to the database's. A resync in flight with no change
        announced since it started is joined, not repeated: a burst of decisions that find
        a full fleet must not read the whole fleet once each."""
        read = self._read
        if read is None or read.done() or self._wanted.is_set():
            # The read queued now reflects every change announced so far.
            self._wanted.clear()
            read = self._read = asyncio.ensure_future(self._resync())
            read.add_done_callback(retrieve)
        await asyncio.shield(read)

    async def _resync(self) -> None:
        read_at = self.writer.seq
        infos, bound, waiting = await self.writer.run(read_fleet)
        in_flight = Counter(node for node, seq in self._binding.values() if seq > read_at)
        known, agents = set(), set()
        for info in infos:
            agents.update(info.agents)
            known.add(info.name)
            changes: dict[str, Any] = {}
            if extra := in_flight.get(info.name, 0):
                changes["running"] = info.running + extra
            heard = self.resources.get(info.name)
            if heard is not None and time.monotonic() - heard[0] < RESOURCES_FRESH_FOR:
                figures = ("cpu_percent", "free_memory_mb", "free_disk_mb")
                changes.update(zip(figures, heard[1:], strict=True))
            if changes:
                info = dataclasses.replace(info, **changes)
            self.cluster.upsert_node(info)
        for gone in [n.name for n in self.cluster.nodes() if n.name not in known]:
            self.cluster.remove_node(gone)
        # The index follows the database (binds of every hub process), plus our own in flight.
        live = {sid for sid, _node, _team in bound} | set(self._binding)
        for sid in [s for s in self.index.sessions() if s not in live]:
            self.index.remove(sid)
            self.cluster.forget(sid)
        for sid, node, team in bound:
            if self.index.node_of(sid) != node:
                self.index.add(node, sid, team)
        self.agents = frozenset(agents)
        self.waiting = waiting
        self.resyncs += 1
        self._synced_at = time.monotonic()
        self._synced.set()
        if self.on_resync is not None:
            self.on_resync()

    def note_resources(
        self, node: str, cpu: float, free_memory_mb: int | None, free_disk_mb: int | None
    ) -> None:
        """A heartbeat's figures, fed into the next resync's picture of the node."""
        self.resources[node] = (time.monotonic(), cpu, free_memory_mb, free_disk_mb)

    def free_slots(self) -> int:
        """Free capacity on schedulable nodes, in the current picture."""
        return sum(
            max(0, n.capacity - n.running)
            for n in self.cluster.nodes()
            if n.ready and not n.cordoned
        )

    async def ready(self) -> None:
        """Wait for the first picture of the fleet."""
        await self._synced.wait()

    async def routed(self, session_id: str) -> None:
        """Wait for the attempt's routing if it is in flight; NotRouted if it was refused."""
        pending = self.routing.pop(session_id, None)
        if pending is not None and not await pending:
            raise NotRouted(session_id)

    # -- the Scheduler protocol ------------------------------------------------------------

    async def schedule(self, request: ScheduleRequest) -> Placement:
        await self.ready()
        sid, node = request.session_id, ""
        for _ in range(self.retries):
            placement = await self._decide(self.cluster.place, request)
            node = placement.node
            self._binding[sid] = (node, self.writer.seq)
            # In the index at once: the next decision for a team mate must see this one,
            # bound or not yet (affinity reads the index).
            self.index.add(node, sid, request.team_id)
            try:
                outcome = await self.writer.run(
                    task_bind,
                    session_id=sid,
                    attempt=request.attempt,
                    node_name=node,
                    reason=placement.reason,
                    score=placement.score,
                    record=placement.record.to_dict() if placement.record else None,
                    owner=self.owner if sid in self.routing else "",
                )
            except BaseException:
                self.cluster.release(sid)
                self.index.remove(sid)
                raise
            finally:
                self._binding.pop(sid, None)
            if outcome is True:
                return placement
            self.cluster.release(sid)
            self.index.remove(sid)
            if outcome != BIND_NODE_FULL:
                await self.routed(sid)  # a routing refused explains the refused bind
                raise SchedulingError(ERR_NOT_PENDING, waitable=False)
            # Our picture of the node was stale: take the database's before deciding again.
            fresh = await self.writer.run(read_node, node)
            if fresh is None:
                self.cluster.remove_node(node)
            else:
                self.cluster.upsert_node(fresh)
        raise SchedulingError(ERR_BIND_CONFLICT.format(node=node, n=self.retries), waitable=True)

    async def estimate(self, request: ScheduleRequest) -> float | None:
        """Load fraction of the node the scheduler would pick now (for ``auto``)."""
        await self.ready()
        try:
            placement = await self._decide(self.cluster.evaluate, request)
        except SchedulingError:
            return None
        info = self.cluster.node(placement.node)
        return info.load if info is not None else None

    async def _decide(self, decide: Any, request: ScheduleRequest) -> Placement:
        try:
            return decide(request)
        except SchedulingError:
            # Fresh, no node change announced since and none being read: the failure is real.
            fresh = time.monotonic() - self._synced_at <= FRESH_FOR
            reading = self._read is not None and not self._read.done()
            if fresh and not self._wanted.is_set() and not reading:
                raise
        await self.resync()
        return decide(request)

    async def claim(
        self, decided: list[tuple[ScheduleRequest, Placement]], owner: str
    ) -> list[tuple[ScheduleRequest, Placement, AttemptSpec]]:
        """Bind waiting tasks to the nodes decided for them (``cluster.place`` already counted
        the slots): one claim for all; what was not won is given back."""
        seq = self.writer.seq
        claims = []
        for request, placement in decided:
            self._binding[request.session_id] = (placement.node, seq)
            self.index.add(placement.node, request.session_id, request.team_id)
            claims.append(
                {
                    "session_id": request.session_id,
                    "attempt": request.attempt,
                    "node_name": placement.node,
                    "reason": placement.reason,
                    "score": placement.score,
                    "record": placement.record.to_dict() if placement.record else None,
                }
            )
        try:
            outcomes = await self.writer.run(tasks_claim_waiting, claims=claims, owner=owner)
        except BaseException:
            outcomes = [ERR_NOT_PENDING] * len(claims)
            raise
        finally:
            won = []
            for (request, placement), outcome in zip(decided, outcomes, strict=True):
                self._binding.pop(request.session_id, None)
                if isinstance(outcome, AttemptSpec):
                    won.append((request, placement, outcome))
                    continue
                self.cluster.release(request.session_id)
                self.index.remove(request.session_id)
                if outcome == BIND_NODE_FULL:
                    self.wake()  # our picture of that node was stale
        return won

    async def bind_decided(
        self, request: ScheduleRequest, placement: Placement, route_reason: str
    ) -> bool:
        """Bind an attempt routed elsewhere (an auto run queued locally) to the node decided
        for it (``cluster.place`` already counted the slot); False when it was not won."""
        sid = request.session_id
        self._binding[sid] = (placement.node, self.writer.seq)
        self.index.add(placement.node, sid, request.team_id)
        outcome: Any = False
        try:
            outcome = await self.writer.run(
                task_bind,
                session_id=sid,
                attempt=request.attempt,
                node_name=placement.node,
                reason=placement.reason,
                score=placement.score,
                record=placement.record.to_dict() if placement.record else None,
                route_reason=route_reason,
            )
        finally:
            self._binding.pop(sid, None)
            if outcome is not True:
                self.cluster.release(sid)
                self.index.remove(sid)
                if outcome == BIND_NODE_FULL:
                    self.wake()
        return outcome is True

    def release(self, session_id: str) -> None:
        """The session's slot is free again (its attempt ended or was moved)."""
        self.cluster.release(session_id)

    def stats(self) -> dict[str, Any]:
        """What the scheduler holds now: nodes in its picture, binds in flight."""
        return {"nodes": len(self.cluster), "binding": len(self._binding)}
