"""The task page's placement panel and attempts table, read from the attempt records.

One account per attempt, from its own row (route, node, reasons, placement record), so the
panel cannot contradict itself: a task that fell back earlier and was placed later says
"placed", and each reason is said once. Placement records come in two shapes: the
scheduler's full record ``{evaluated, feasible, rejected, candidates, chosen, summary}`` and,
for attempts stored before it, ``{node, score, reason}`` or nothing at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils import timezone

from executor_core.types import ExecutionStrategy
from hivemind_web.hub.models import Task, TaskAttempt

MAX_CANDIDATES = 5

PLACED = "placed"
FELL_BACK = "fell_back"
LOCAL = "local"
WAITING = "waiting"
ROUTING = "routing"


@dataclass(frozen=True)
class Candidate:
    node: str
    total: float
    scores: list[tuple[str, float]]
    chosen: bool


@dataclass(frozen=True)
class Panel:
    outcome: str  # one of PLACED, FELL_BACK, LOCAL, WAITING, ROUTING
    node: str
    headline: str  # the one sentence that says where the attempt runs and why
    why: str = ""  # for a placement: the scheduler's word on why that node
    router: str = ""  # the router's reason, when it adds something
    selector: dict[str, str] = field(default_factory=dict)  # shown only for node work
    evaluated: int | None = None
    feasible: int | None = None
    rejected: list[tuple[str, int]] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)


@dataclass(frozen=True)
class AttemptRow:
    number: int
    route: str
    node: str
    status: str
    started_at: datetime | None
    duration: float | None  # seconds; up to now while it runs
    note: str  # why it ended so, or where its fallback came from


def _record(placement: Any) -> dict[str, Any]:
    return placement if isinstance(placement, dict) else {}


def _candidates(record: dict[str, Any], chosen: str) -> list[Candidate]:
    rows = []
    for item in record.get("candidates") or []:
        if not isinstance(item, dict) or "node" not in item:
            continue
        scores = item.get("scores") or {}
        rows.append(
            Candidate(
                node=str(item["node"]),
                total=float(item.get("total") or 0.0),
                scores=sorted((str(k), float(v)) for k, v in scores.items()),
                chosen=str(item["node"]) == chosen,
            )
        )
    return rows[:MAX_CANDIDATES]


def _router_note(reason: str, *said: str) -> str:
    """The router's reason, unless it only repeats the strategy or what is said already."""
    if not reason or reason.startswith("requested ") or any(reason in s for s in said if s):
        return ""
    return reason


def placement_panel(task: Task, attempt: TaskAttempt | None) -> Panel:
    """Where the task's current attempt runs, and why, from that attempt's own record."""
    record = _record(attempt.placement if attempt else {})
    route = attempt.route if attempt else task.route
    node = (attempt.node if attempt else "") or (task.node.name if task.node_id else "")
    reason = (attempt.reason if attempt else "") or task.route_reason
    fallback = attempt.fallback_reason if attempt else task.fallback_reason
    for_nodes = task.strategy != ExecutionStrategy.LOCAL
    selector = dict(task.node_selector) if for_nodes else {}
    details: dict[str, Any] = {}
    if "evaluated" in record:
        details = {
            "evaluated": record.get("evaluated"),
            "feasible": record.get("feasible"),
            "rejected": sorted((record.get("rejected") or {}).items(), key=lambda kv: -kv[1]),
            "candidates": _candidates(record, str(record.get("chosen") or node)),
        }
    waiting = getattr(task, "waiting_reason", "")
    if route == Task.Route.GOLEM and node:
        why = record.get("summary") or record.get("reason") or ""
        headline = f"Placed on {node}" + (f": {why}" if why else ".")
        router = _router_note(reason, why)
        return Panel(PLACED, node, headline, why, router, selector, **details)
    if route == Task.Route.LOCAL and fallback:
        headline = f"Fell back to local execution: {fallback}"
        router = _router_note(reason, fallback)
        return Panel(FELL_BACK, "", headline, "", router, selector, **details)
    if route == Task.Route.LOCAL:
        headline = f"Runs locally: {reason}" if reason else "Runs locally."
        return Panel(LOCAL, "", headline)
    if task.status == "pending" and waiting:
        headline = f"Waiting for a node: {waiting}"
        return Panel(WAITING, "", headline, "", "", selector, **details)
    return Panel(ROUTING, "", "Waiting for the router.", "", "", selector)


def _duration(attempt: TaskAttempt, now: datetime) -> float | None:
    if attempt.started_at is None:
        return None
    end = attempt.finished_at or now
    return max(0.0, (end - attempt.started_at).total_seconds())


def attempt_rows(attempts: list[TaskAttempt]) -> list[AttemptRow]:
    now = timezone.now()
    return [
        AttemptRow(
            number=a.number,
            route=("fallback" if a.route == Task.Route.LOCAL and a.fallback_reason else a.route),
            node=a.node,
            status=a.status,
            started_at=a.started_at,
            duration=_duration(a, now),
            note=a.error or a.fallback_reason,
        )
        for a in attempts
    ]


def task_attempts(task: Task) -> list[TaskAttempt]:
    return list(TaskAttempt.objects.filter(task=task).order_by("number"))
