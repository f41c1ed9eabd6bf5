"""Waiting for capacity, the runtime's side (DESIGN §11).

A golem or auto attempt no node can take now is parked in the database's wait queue rather
than sent to local at once (GolemExecutor asks ``park``). When room appears — a run ends, a
node joins, is uncordoned or grows (announced after commit), or a resync shows room another
hub process freed — ``wake`` fills the free slots from the head of the queue: highest
priority first, then oldest, each decided in memory and all claimed in one transaction; a
task another hub claimed first is skipped. A task past its deadline is claimed for the local
fallback. Nothing is polled per task: the queue is read only when there is room and
something waits (the resync's count says so).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from executor_core.executors import LocalExecutor, build_schedule_request
from executor_core.index import NodeTaskIndex
from executor_core.scheduling import Placement, ScheduleRequest, SchedulingError
from executor_core.types import ExecuteRequest, ExecutionResult, TaskStatus
from hivemind_web.hub.execution.scheduler import HubScheduler
from hivemind_web.hub.execution.writer import GroupWriter
from hivemind_web.hub.intents import AttemptSpec
from hivemind_web.hub.services.waiting import (
    EXPIRED,
    PARKED,
    task_park,
    tasks_claim_expired,
    waiting_heads,
)

log = logging.getLogger(__name__)

# The queue is read a page at a time, the first one the free slots plus this many: tasks at
# the head that fit no free node (another selector, a busy pinned node) must not hide the ones
# behind them, so while slots stay free and the page was full, the next page (twice as long),
# up to MAX_HEADS in all.
LOOKAHEAD = 8
MAX_HEADS = 500
OFFERED = "auto: a node freed up while it waited in the local queue"


class WaitQueue:
    def __init__(
        self,
        *,
        writer: GroupWriter,
        scheduler: HubScheduler,
        index: NodeTaskIndex,
        owner: str,
        request_of: Callable[[AttemptSpec], ExecuteRequest],
        place: Callable[[AttemptSpec, Placement], None],
        fall_back: Callable[[AttemptSpec], None],
        spawn: Callable[[Any], Any],
        local: LocalExecutor | None = None,
        requeue: Callable[[AttemptSpec], None] | None = None,
    ) -> None:
        self.writer = writer
        self.scheduler = scheduler
        self.index = index
        self.owner = owner
        self.request_of = request_of
        self.place = place
        self.fall_back = fall_back
        self.spawn = spawn
        # Auto attempts waiting in the local executor's queue: offered to a node that frees
        # up before they get a local slot (``requeue`` puts back one whose bind was lost).
        self.local = local
        self.requeue = requeue
        self.offerable: dict[str, AttemptSpec] = {}
        # The scheduler's account of decisions that fell back at once, for the local
        # fallback to keep on the attempt (no extra write).
        self.records: dict[str, dict[str, Any]] = {}
        self._filling = False
        self._again = False
        self.placed = 0  # figures: placed from the queue, fallen back after waiting
        self.expired = 0

    # -- GolemExecutor's WaitQueue protocol -------------------------------------------------

    async def park(self, request: ExecuteRequest, error: SchedulingError) -> ExecutionResult | None:
        await self.scheduler.routed(request.session_id)  # ours to park (NotRouted if not)
        record = error.record.to_dict() if error.record is not None else None
        if error.waitable and request.max_wait:
            outcome = await self.writer.run(
                task_park,
                session_id=request.session_id,
                attempt=request.attempt,
                reason=error.reason,
                max_wait=request.max_wait,
                placement=record,
            )
            if outcome != EXPIRED:
                if outcome == PARKED:
                    self.scheduler.waiting += 1
                    self.wake()  # a slot may have freed while this was being decided
                return ExecutionResult(
                    request.session_id,
                    TaskStatus.PENDING,
                    "golem",
                    details={"waiting": error.reason},
                )
        if record is not None:
            self.records[request.session_id] = record
        return None

    # -- filling free slots -----------------------------------------------------------------

    def room_maybe(self) -> None:
        """After a resync: fill what the new picture shows free, if anything waits."""
        if self._anything_waits() and self.scheduler.free_slots() > 0:
            self.wake()

    def _anything_waits(self) -> bool:
        return self.scheduler.waiting > 0 or bool(self.offerable)

    def _queued_locally(self) -> list[AttemptSpec]:
        local = self.local
        if local is None:
            return []
        return [spec for sid, spec in self.offerable.items() if local.is_queued(sid)]

    def wake(self) -> None:
        """Room may have appeared. Loop thread only; wake-ups during a fill coalesce."""
        if self._filling:
            self._again = True
            return
        self._filling = True
        self.spawn(self._fill_while_wanted())

    async def _fill_while_wanted(self) -> None:
        try:
            while True:
                self._again = False
                try:
                    await self._fill()
                except Exception:
                    log.exception("filling free slots from the wait queue failed")
                if not self._again:
                    return
        finally:
            self._filling = False

    async def _fill(self) -> None:
        if not self._anything_waits():  # the common case, at no cost: nothing to fill with
            return
        await self.scheduler.ready()
        free = self.scheduler.free_slots()
        if free <= 0:
            return
        decided: list[tuple[ScheduleRequest, Placement]] = []
        offered: list[tuple[AttemptSpec, ScheduleRequest, Placement]] = []
        # Runs queued locally (they already waited for a local slot) go before the queue's
        # tasks of their priority; one of a lower priority than a page's last task waits
        # until the pages that may still outrank it were read.
        local = self._queued_locally()
        seen: set[str] = set()
        offset, more, limit = 0, self.scheduler.waiting > 0, free + LOOKAHEAD
        while free > 0:
            heads: list[AttemptSpec] = []
            if more:
                limit = min(MAX_HEADS - offset, limit)
                page = await self.writer.run(waiting_heads, limit=limit, offset=offset)
                offset += len(page)
                more = len(page) == limit and offset < MAX_HEADS
                if not page and offset == 0:
                    self.scheduler.waiting = 0
                heads = [spec for spec, _ in page if spec.session_id not in seen]
                seen.update(spec.session_id for spec in heads)
            floor = heads[-1].priority if more and heads else None
            now, later = [], []
            for spec in local:
                (now if floor is None or spec.priority >= floor else later).append(spec)
            local = later
            candidates = [(spec, True) for spec in now] + [(spec, False) for spec in heads]
            candidates.sort(key=lambda item: -item[0].priority)  # stable: keeps the orders
            for spec, is_local in candidates:
                if free <= 0:
                    break
                request = build_schedule_request(self.request_of(spec), self.index)
                try:
                    placement = self.scheduler.cluster.place(request)
                except SchedulingError:
                    continue  # fits no free node: the ones behind it may
                if is_local:
                    if self.local is None or not self.local.withdraw(spec.session_id):
                        self.scheduler.cluster.release(spec.session_id)  # it started meanwhile
                        continue
                    offered.append((spec, request, placement))
                else:
                    decided.append((request, placement))
                free -= 1
            if not more and not local:
                break
            limit *= 2  # the next page, if any: twice as long (few reads when many do not fit)
        placed = 0
        for spec, request, placement in offered:
            self.offerable.pop(spec.session_id, None)
            if await self.scheduler.bind_decided(request, placement, OFFERED):
                self.place(spec, placement)
                placed += 1
            elif self.requeue is not None:
                self.requeue(spec)  # lost the node: back to the local queue
        if decided:
            won = await self.scheduler.claim(decided, self.owner)
            self.scheduler.waiting = max(0, self.scheduler.waiting - len(won))
            for _request, placement, spec in won:
                self.place(spec, placement)
            placed += len(won)
        self.placed += placed
        if placed and self.scheduler.free_slots() > 0:
            self._again = True  # more may fit

    # -- deadlines --------------------------------------------------------------------------

    async def expire(self) -> int:
        """Fall back the tasks whose time to wait is up (any hub's; each claimed once)."""
        if self.scheduler.waiting <= 0:
            return 0
        specs = await self.writer.run(tasks_claim_expired, owner=self.owner)
        self.scheduler.waiting = max(0, self.scheduler.waiting - len(specs))
        self.expired += len(specs)
        for spec in specs:
            self.fall_back(spec)
        return len(specs)
