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

from django.utils import timezone

from hivemind_web.hub.intents import AttemptSpec
from hivemind_web.hub.models import HubInstance, Task
from hivemind_web.hub.services import nodes as node_services
from hivemind_web.hub.services.hub import fallback_mode_enabled
from hivemind_web.hub.services.orchestrator import tasks_fail_each
from hivemind_web.hub.services.tasks import task_unbind
from hivemind_web.hub.services.timeouts import tasks_time_out

if TYPE_CHECKING:
    from hivemind_web.hub.execution.runtime import Runtime

log = logging.getLogger(__name__)
TICK = 1.0
# Load history for the plots: one sample per node every few ticks is plenty.
SAMPLE_EVERY = 5
HUB_RESTARTED = "hub restarted"
HUB_LOST = "hub lost (its process stopped renewing its lease)"
# A hub process renews its lease every few ticks; one silent for LEASE_SECONDS is dead.
LEASE_EVERY = 5
LEASE_SECONDS = 20.0
ASSIGN_LOST = "assignment lost (hub restarted before the node accepted)"


def release_instance(instance: str, error: str) -> None:
    """What a dead hub process held: its local runs fail with ``error`` (then the team
    policy applies), and the pending attempts it had claimed are free to be routed again."""
    stuck = Task.objects.filter(owner=instance, route=Task.Route.LOCAL, status="running")
    tasks_fail_each(stuck, error=error, actor="system")
    node_services.nodes_release_hub(instance=instance)
    Task.objects.filter(status="pending", owner=instance).exclude(route_reason="").update(
        route_reason=""
    )


def unclaimed_pending(older_than: object = None) -> list[AttemptSpec]:
    """Pending attempts nobody claimed for routing (``older_than``: created before then).
    Tasks in the wait queue are the queue's: any hub places them when a slot frees."""
    pending = Task.objects.select_related("team").filter(
        status="pending", route_reason="", wait_until__isnull=True
    )
    if older_than is not None:
        pending = pending.filter(updated_at__lt=older_than)
    return [AttemptSpec.of(task) for task in pending[:1000]]


def recover_after_restart(instance: str) -> list[AttemptSpec]:
    """Release what this instance's previous run left behind (a stable HIVEMIND_INSTANCE
    name lets a restart do so at once); return the attempts to (re)start.

    Attempts claimed by other, living hub processes are theirs to finish.
    """
    release_instance(instance, HUB_RESTARTED)
    renew_lease(instance)
    return unclaimed_pending()


def renew_lease(instance: str) -> None:
    now = timezone.now()
    if not HubInstance.objects.filter(name=instance).update(last_seen=now):
        HubInstance.objects.update_or_create(name=instance, defaults={"last_seen": now})


def reap_expired_instances(expired_before: object, *, alive: str) -> list[AttemptSpec]:
    """Release what hub processes whose lease ran out held; return attempts to (re)start.
    ``alive`` is the caller: a late renewal of its own never makes it reap itself."""
    dead = list(
        HubInstance.objects.filter(last_seen__lt=expired_before)
        .exclude(name=alive)
        .values_list("name", flat=True)
    )
    for name in dead:
        release_instance(name, HUB_LOST)
        HubInstance.objects.filter(name=name, last_seen__lt=expired_before).delete()
    return unclaimed_pending() if dead else []


def _stuck_assignments(older_than: object) -> list[tuple[str, int, str | None]]:
    rows = Task.objects.filter(status="scheduled", updated_at__lt=older_than)
    return [
        (str(sid), attempt, node)
        for sid, attempt, node in rows.values_list("session_id", "attempts", "node__name")
    ]


def _pending_spec(session_id: str, attempt: int) -> AttemptSpec | None:
    task = (
        Task.objects.select_related("team")
        .filter(session_id=session_id, attempts=attempt, status="pending")
        .first()
    )
    return AttemptSpec.of(task) if task is not None else None


class Reaper:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._ticks = 0
        # The latest heartbeat of every node heard since the last load sample: a node that
        # beats every few seconds is sampled every SAMPLE_EVERY ticks, whichever tick its
        # beats fall on (sampling only the sample tick's own beats lost most of them).
        self._unsampled: dict[str, dict] = {}

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
        self._unsampled.update(beats)
        samples = None
        if self._ticks % SAMPLE_EVERY == 0:
            samples, self._unsampled = self._unsampled, {}
        # Ahead of the queue: never behind a backlog of task writes.
        await rt.writer.enqueue_first(node_services.node_flush_heartbeats, beats, samples=samples)
        # A connection that lost its identity (taken over, token rotated) is closed here.
        await rt.connections.verify()
        now = timezone.now()
        # Heartbeats sent while this hub was down were never heard: judge a node's silence
        # only over time this hub has been listening, or a hub outage fails live nodes.
        up_for = time.monotonic() - rt.started_at
        if up_for > cfg["HEARTBEAT_GRACE"]:
            grace = cfg["HEARTBEAT_GRACE"]
            await rt.writer.enqueue_first(
                node_services.node_mark_stale,
                silent_since=now - timedelta(seconds=grace),
                heard=rt.heard_since(grace),
            )
        # Tasks that waited past their time fall back (any hub's: each is claimed once);
        # runs past their timeout fail "timed out".
        await rt.wait_queue.expire()
        await rt.writer.run(tasks_time_out)
        if up_for > cfg["LOST_AFTER"]:
            await rt.writer.run(
                node_services.node_fail_lost_tasks,
                now=now,
                lost_after=timedelta(seconds=cfg["LOST_AFTER"]),
            )
        # An assignment nobody here waits for (its hub restarted) goes back to pending; the
        # node is told to drop it in case it did accept.
        older = now - timedelta(seconds=2 * cfg["ASSIGN_TIMEOUT"])
        for sid, attempt, node in await rt.writer.run(_stuck_assignments, older):
            if not rt.dispatcher.waiting(sid, attempt) and await rt.writer.run(
                task_unbind, session_id=sid, attempt=attempt, reason=ASSIGN_LOST
            ):
                if node:
                    await rt.stop(sid, node)
                spec = await rt.writer.run(_pending_spec, sid, attempt)
                if spec is not None:
                    rt.spawn(rt.run_attempt(spec))
        # Every tick: how long this hub has been listening tells others about its nodes.
        await rt.writer.enqueue_first(renew_lease, rt.instance)
        if self._ticks % LEASE_EVERY == 0:
            expired = now - timedelta(seconds=LEASE_SECONDS)
            reaped = await rt.writer.run(reap_expired_instances, expired, alive=rt.instance)
            # Pending attempts nobody started (submitted from a process without a runtime,
            # or announced to a hub that died before it claimed them) are routed here.
            unclaimed = older - timedelta(seconds=LEASE_SECONDS)
            reaped += await rt.writer.run(unclaimed_pending, unclaimed)
            rt.fallback_mode = await rt.writer.run(fallback_mode_enabled)
            for spec in {s.session_id: s for s in reaped}.values():
                rt.spawn(rt.run_attempt(spec))
        if self._ticks % 60 == 0:
            await rt.join_control_group()
            window = timedelta(seconds=cfg["LOAD_HISTORY_SECONDS"])
            await rt.writer.run(node_services.node_prune_samples, before=now - window)
