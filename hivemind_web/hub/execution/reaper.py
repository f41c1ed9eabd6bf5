"""Housekeeping on the hub loop: heartbeats, lost nodes, stuck assignments, restarts.

Several hub processes may each run a reaper: every step is a conditional update, so doing it
twice changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from channels.db import database_sync_to_async
from django.db import transaction
from django.utils import timezone

from hivemind_web.hub.models import Task
from hivemind_web.hub.services import nodes as node_services
from hivemind_web.hub.services.orchestrator import task_handle_failure
from hivemind_web.hub.services.tasks import task_unbind

if TYPE_CHECKING:
    from hivemind_web.hub.execution.runtime import Runtime

log = logging.getLogger(__name__)
TICK = 1.0
# Load history for the plots: one sample per node every few ticks is plenty.
SAMPLE_EVERY = 5
HUB_RESTARTED = "hub restarted"
ASSIGN_LOST = "assignment lost (hub restarted before the node accepted)"


def recover_after_restart(instance: str) -> list[tuple[str, int]]:
    """Fail the local attempts this instance left running; return the attempts to (re)start.

    Pending attempts this instance had claimed (routed, waiting in its local queue or being
    placed) lost their router with it: their claim is released so they are routed again.
    Attempts claimed by other, living hub processes are theirs to finish.
    """
    stuck = Task.objects.select_related("team", "node").filter(
        owner=instance, route=Task.Route.LOCAL, status="running"
    )
    for task in stuck:
        with transaction.atomic():
            task_handle_failure(task=task, error=HUB_RESTARTED, actor="system")
    Task.objects.filter(status="pending", owner=instance).exclude(route_reason="").update(
        route_reason=""
    )
    pending = Task.objects.filter(status="pending", route_reason="").values_list(
        "session_id", "attempts"
    )
    return [(str(sid), attempt) for sid, attempt in pending]


def _stuck_assignments(older_than: object) -> list[tuple[str, int, str | None]]:
    rows = Task.objects.filter(status="scheduled", updated_at__lt=older_than)
    return [
        (str(sid), attempt, node)
        for sid, attempt, node in rows.values_list("session_id", "attempts", "node__name")
    ]


class Reaper:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._ticks = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            try:
                await self.tick()
            except Exception:
                log.exception("reaper tick failed")

    async def tick(self) -> None:
        rt, cfg = self.runtime, self.runtime.cfg
        self._ticks += 1
        beats, rt.heartbeats = rt.heartbeats, {}
        await rt.writer.run(
            node_services.node_flush_heartbeats, beats, sample=self._ticks % SAMPLE_EVERY == 0
        )
        now = timezone.now()
        # Heartbeats sent while this hub was down were never heard: judge a node's silence
        # only over time this hub has been listening, or a hub outage fails live nodes.
        up_for = time.monotonic() - rt.started_at
        if up_for > cfg["HEARTBEAT_GRACE"]:
            await rt.writer.run(
                node_services.node_mark_stale,
                silent_since=now - timedelta(seconds=cfg["HEARTBEAT_GRACE"]),
            )
        if up_for > cfg["LOST_AFTER"]:
            await rt.writer.run(
                node_services.node_fail_lost_tasks,
                lost_since=now - timedelta(seconds=cfg["LOST_AFTER"]),
            )
        # An assignment nobody here waits for (its hub restarted) goes back to pending; the
        # node is told to drop it in case it did accept.
        older = now - timedelta(seconds=2 * cfg["ASSIGN_TIMEOUT"])
        for sid, attempt, node in await database_sync_to_async(_stuck_assignments)(older):
            if not rt.dispatcher.waiting(sid, attempt) and await rt.writer.run(
                task_unbind, session_id=sid, attempt=attempt, reason=ASSIGN_LOST
            ):
                if node:
                    await rt.send_cancel(node, sid)
                rt.spawn(rt.run_task(sid, attempt))
        if self._ticks % 60 == 0:
            await rt.join_control_group()
            window = timedelta(seconds=cfg["LOAD_HISTORY_SECONDS"])
            await rt.writer.run(node_services.node_prune_samples, before=now - window)
