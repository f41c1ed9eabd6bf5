"""Prometheus metrics, read from the database at scrape time (DESIGN §14).

The database is the truth, and several hub processes share it: every figure here is a count
over its rows, so any process answers for the whole hub and the counters equal the database
by construction (a counter of tasks ever finished is the number of finished rows; rows are
never deleted). A scrape costs a handful of grouped queries.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import timedelta

from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from hivemind_web.hub.models import Node, Task, TaskAttempt
from hivemind_web.hub.selectors import fleet_summary

TERMINAL = ("succeeded", "failed", "cancelled")
# Seconds. Scheduling (submit → running) is usually milliseconds; runs take up to hours.
SCHEDULING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

# Fallback reasons as the hub writes them, by kind: (kind, words that mark it), first match.
FALLBACK_KINDS = (
    ("fallback_mode", ("fallback mode is on",)),
    ("forced", ("forced",)),
    ("not_accepted", ("did not accept",)),
    ("rejected", ("rejected", "refused")),
    ("bind_conflict", ("bind conflict",)),
    ("waited_too_long", ("waited", "max_wait")),
    ("no_feasible_node", ("nodes available", "no node", "no feasible")),
)


def fallback_kind(reason: str) -> str:
    text = reason.lower()
    for kind, words in FALLBACK_KINDS:
        if any(word in text for word in words):
            return kind
    return "other"


def _histogram(
    name: str, doc: str, rows: Iterable[dict], buckets: tuple[float, ...]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["agent"])
    for row in rows:
        counts = [row[f"le{i}"] for i in range(len(buckets))]
        pairs = [(str(b), float(c)) for b, c in zip(buckets, counts, strict=True)]
        pairs.append(("+Inf", float(row["n"])))
        total = row["total"]
        family.add_metric(
            [row["agent_id"]], pairs, total.total_seconds() if total is not None else 0.0
        )
    return family


def _bucketed(qs, start: str, end: str, buckets: tuple[float, ...]) -> list[dict]:
    """Per agent: how many of ``qs`` took at most each bucket from ``start`` to ``end``."""
    span = ExpressionWrapper(F(end) - F(start), output_field=DurationField())
    qs = qs.filter(**{f"{start}__isnull": False, f"{end}__isnull": False}).annotate(span=span)
    aggregates = {
        f"le{i}": Count("id", filter=Q(span__lte=timedelta(seconds=b)))
        for i, b in enumerate(buckets)
    }
    return list(qs.values("agent_id").annotate(n=Count("id"), total=Sum("span"), **aggregates))


class HubCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        tasks = GaugeMetricFamily(
            "hivemind_tasks", "Tasks now, by status and route", labels=["status", "route"]
        )
        finished = CounterMetricFamily(
            "hivemind_tasks_finished",
            "Tasks that ended, by status and route",
            labels=["status", "route"],
        )
        submitted = CounterMetricFamily(
            "hivemind_tasks_submitted", "Tasks submitted, by strategy", labels=["strategy"]
        )
        for status, route, n in (
            Task.objects.values_list("status", "route").annotate(n=Count("id")).order_by()
        ):
            tasks.add_metric([status, route or "none"], n)
            if status in TERMINAL:
                finished.add_metric([status, route or "none"], n)
        for strategy, n in Task.objects.values_list("strategy").annotate(n=Count("id")).order_by():
            submitted.add_metric([strategy], n)
        yield from (tasks, finished, submitted)

        kinds: dict[str, int] = {}
        for reason, n in (
            TaskAttempt.objects.exclude(fallback_reason="")
            .values_list("fallback_reason")
            .annotate(n=Count("id"))
            .order_by()
        ):
            kinds[fallback_kind(reason)] = kinds.get(fallback_kind(reason), 0) + n
        fallbacks = CounterMetricFamily(
            "hivemind_fallbacks", "Attempts that fell back to local, by kind", labels=["kind"]
        )
        for kind, n in sorted(kinds.items()):
            fallbacks.add_metric([kind], n)
        yield fallbacks

        yield _histogram(
            "hivemind_scheduling_seconds",
            "From submission to running, per agent (the task's first start)",
            _bucketed(Task.objects.all(), "created_at", "started_at", SCHEDULING_BUCKETS),
            SCHEDULING_BUCKETS,
        )
        yield _histogram(
            "hivemind_task_duration_seconds",
            "From start to end of finished tasks, per agent",
            _bucketed(
                Task.objects.filter(status__in=TERMINAL),
                "started_at",
                "finished_at",
                DURATION_BUCKETS,
            ),
            DURATION_BUCKETS,
        )

        summary = fleet_summary()
        queue = GaugeMetricFamily("hivemind_queue_depth", "Tasks waiting", labels=["queue"])
        queue.add_metric(["pending"], summary["tasks_queued"])
        queue.add_metric(["local"], summary["local_queued"])
        yield queue
        local = GaugeMetricFamily(
            "hivemind_local_slots", "The local executor's slots", labels=["state"]
        )
        local.add_metric(["running"], summary["local_running"])
        local.add_metric(["total"], summary["local_slots"])
        yield local

        nodes = GaugeMetricFamily("hivemind_nodes", "Nodes by status", labels=["status"])
        by_status = dict(Node.objects.values_list("status").annotate(n=Count("id")).order_by())
        for status in Node.Status.values:
            nodes.add_metric([status], by_status.get(status, 0))
        yield nodes
        running = GaugeMetricFamily(
            "hivemind_node_running", "Tasks bound to each node", labels=["node"]
        )
        capacity = GaugeMetricFamily(
            "hivemind_node_capacity", "Slots of each node", labels=["node"]
        )
        for name, bound, slots in Node.objects.values_list("name", "running", "capacity"):
            running.add_metric([name], bound)
            capacity.add_metric([name], slots)
        yield from (running, capacity)


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(HubCollector())
