"""The board's charts are counts over the task rows of the last hour."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from hivemind_web.dashboard.charts import board_charts, percentile
from hivemind_web.hub.models import Task, TaskAttempt
from hivemind_web.hub.services import submission

pytestmark = pytest.mark.django_db


def task(agent: str = "echo", strategy: str = "golem", **fields) -> Task:
    row = submission.task_submit(
        actor=None, agent_id=agent, input="1", strategy=strategy, start=False
    )
    Task.objects.filter(pk=row.pk).update(**fields)
    row.refresh_from_db()
    return row


def test_throughput_queue_fallbacks_and_durations_over_the_hour() -> None:
    now = timezone.now().replace(second=30, microsecond=0)
    ago = lambda minutes, seconds=0: now - timedelta(minutes=minutes, seconds=seconds)  # noqa: E731
    for s in (1, 2, 3):
        task(
            status="succeeded",
            created_at=ago(5),
            started_at=ago(4),
            finished_at=ago(4) + timedelta(seconds=s),
        )
    task(status="failed", created_at=ago(5), started_at=ago(4), finished_at=ago(4, -10))
    task(status="pending", created_at=ago(2))
    task(status="pending", created_at=ago(90))  # queued since before the hour
    fell = task(status="succeeded", created_at=ago(3), started_at=ago(3), finished_at=ago(3, -1))
    TaskAttempt.objects.get_or_create(task=fell, number=1)
    TaskAttempt.objects.filter(task=fell).update(
        fallback_reason="0/1 nodes available", created_at=ago(3)
    )
    TaskAttempt.objects.exclude(task=fell).update(created_at=ago(50))
    charts = board_charts(now)
    last = 59  # the minute holding ``now``
    assert charts["finished"]["succeeded"][last - 4] == 3
    assert charts["finished"]["failed"][last - 4] == 1
    assert sum(charts["finished"]["succeeded"]) == 4
    # Before minute -5 only the old pending one waits; five more come at -5, leave at -4.
    assert charts["queued"][last - 6] == 1
    assert charts["queued"][last - 5] == 5
    assert charts["queued"][last - 4] == 1
    assert charts["queued"][last] == 2
    assert charts["fallback_rate"][last - 3] == 1.0
    echo = next(d for d in charts["durations"] if d["agent"] == "echo")
    assert echo["n"] == 5 and echo["p50"] == 2.0 and echo["p95"] == 10.0


@pytest.mark.parametrize(("q", "value"), [(0.5, 3), (0.95, 10), (0.0, 1), (1.0, 10)])
def test_percentiles_are_nearest_rank(q: float, value: float) -> None:
    assert percentile([1, 2, 3, 4, 10], q) == value


def test_the_charts_endpoint_needs_the_view_permission(bob: Client, charlie: Client) -> None:
    assert charlie.get("/board/charts.json").status_code == 403
    body = bob.get("/board/charts.json").json()
    assert len(body["queued"]) == 60 and set(body["finished"]) == {
        "succeeded",
        "failed",
        "cancelled",
    }
