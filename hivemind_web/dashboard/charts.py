"""The board's charts over the last hour, computed from the task rows (DESIGN §14).

Per minute: tasks finished by status (throughput), the queue depth at the minute's end, and
the share of node-bound attempts that fell back to local; per agent: p50 and p95 run time of
the tasks finished in the hour. Every figure is a count over the database, so the charts of
every hub process agree, and a few grouped queries make them. The board fetches them every
few seconds (``/board/charts.json``); one read serves every board of a process for CHART_TTL.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Q
from django.db.models.functions import Coalesce, TruncMinute
from django.utils import timezone

from hivemind_web.hub.models import Task, TaskAttempt

MINUTES = 60
CHART_TTL = 5.0
MAX_DURATION_ROWS = 20_000
FINISHED = ("succeeded", "failed", "cancelled")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted ``values`` (q in 0..1)."""
    rank = max(1, math.ceil(q * len(values)))
    return values[rank - 1]


def _index(start: datetime, at: datetime | None) -> int | None:
    if at is None:
        return None
    i = int((at - start).total_seconds() // 60)
    return i if 0 <= i < MINUTES else None


def board_charts(now: datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    start = end - timedelta(minutes=MINUTES)
    finished: dict[str, list[int]] = {status: [0] * MINUTES for status in FINISHED}
    for minute, status, n in (
        Task.objects.filter(finished_at__gte=start, status__in=FINISHED)
        .annotate(m=TruncMinute("finished_at"))
        .values_list("m", "status")
        .annotate(n=Count("id"))
        .order_by()
    ):
        if (i := _index(start, minute)) is not None:
            finished[status][i] += n

    # Queue depth at the end of each minute: created by then, not yet started (or ended
    # without starting) by then.
    left = Coalesce("started_at", "finished_at")
    base = (
        Task.objects.filter(created_at__lt=start)
        .annotate(left=left)
        .filter(Q(left__isnull=True) | Q(left__gte=start))
        .count()
    )
    delta = [0] * MINUTES
    for minute, n in (
        Task.objects.filter(created_at__gte=start)
        .annotate(m=TruncMinute("created_at"))
        .values_list("m")
        .annotate(n=Count("id"))
        .order_by()
    ):
        if (i := _index(start, minute)) is not None:
            delta[i] += n
    for minute, n in (
        Task.objects.annotate(left=left)
        .filter(left__gte=start)
        .annotate(m=TruncMinute("left"))
        .values_list("m")
        .annotate(n=Count("id"))
        .order_by()
    ):
        if (i := _index(start, minute)) is not None:
            delta[i] -= n
    queued, depth = [], base
    for change in delta:
        depth += change
        queued.append(max(0, depth))

    attempts = [0] * MINUTES
    fell = [0] * MINUTES
    for minute, total, fallbacks in (
        TaskAttempt.objects.filter(created_at__gte=start)
        .exclude(task__strategy="local")
        .annotate(m=TruncMinute("created_at"))
        .values_list("m")
        .annotate(n=Count("id"), f=Count("id", filter=~Q(fallback_reason="")))
        .order_by()
    ):
        if (i := _index(start, minute)) is not None:
            attempts[i] += total
            fell[i] += fallbacks
    rate = [round(f / a, 3) if a else None for f, a in zip(fell, attempts, strict=True)]

    runs: dict[str, list[float]] = {}
    rows = (
        Task.objects.filter(finished_at__gte=start, started_at__isnull=False)
        .values_list("agent_id", "started_at", "finished_at")
        .order_by("-finished_at")[:MAX_DURATION_ROWS]
    )
    for agent, began, ended in rows:
        runs.setdefault(agent, []).append(max(0.0, (ended - began).total_seconds()))
    durations = []
    for agent, values in sorted(runs.items()):
        values.sort()
        durations.append(
            {
                "agent": agent,
                "n": len(values),
                "p50": round(percentile(values, 0.5), 3),
                "p95": round(percentile(values, 0.95), 3),
            }
        )
    return {
        "start": int(start.timestamp() * 1000),
        "minute_ms": 60_000,
        "finished": finished,
        "queued": queued,
        "fallback_rate": rate,
        "durations": durations,
    }


class ChartCache:
    """One read of the charts per CHART_TTL for every board of this process."""

    def __init__(self, ttl: float = CHART_TTL) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._value: dict[str, Any] | None = None
        self._at = float("-inf")

    def get(self) -> dict[str, Any]:
        with self._lock:
            if self._value is None or time.monotonic() - self._at > self.ttl:
                self._value, self._at = board_charts(), time.monotonic()
            return self._value


CHARTS = ChartCache()
