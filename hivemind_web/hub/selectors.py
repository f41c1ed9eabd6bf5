"""Reads: the board's and the API's queries (services write, selectors read)."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from executor_core.types import TaskStatus
from hivemind_web.hub.models import HubInstance, Node, Task, TaskAttempt, Team

BOUND = ["scheduled", "running"]
# A hub process that renewed its lease this recently counts for the local slots.
HUB_ALIVE_SECONDS = 20.0
ERR_STATUS = "unknown status {value!r}; expected some of: {choices}"
ERR_ROUTE = "unknown route {value!r}; expected one of: {choices}"
# ``fallback``: tasks meant for a node that ran locally because scheduling failed.
FALLBACK = "fallback"
ROUTES = ("local", "golem", FALLBACK)
# The start of a session id as typed (the board shows its first 8 hex digits): Django
# compares it with the id's text form, hyphens as the database spells them.
_ID_PREFIX = re.compile(r"[0-9a-f]{4}[0-9a-f-]{0,32}")


def parse_route(raw: str | None) -> str:
    """ "" or one of ROUTES; raises ValueError on anything else."""
    value = (raw or "").strip()
    if value and value not in ROUTES:
        raise ValueError(ERR_ROUTE.format(value=value, choices=", ".join(ROUTES)))
    return value


def search_condition(term: str) -> Q:
    """Tasks a search box term finds: the whole session id or its first characters (the
    8 the board shows), or the agent, or the input text containing it."""
    condition = Q(agent_id__icontains=term) | Q(input__icontains=term)
    try:
        condition |= Q(session_id=uuid.UUID(term))
    except ValueError:
        if _ID_PREFIX.fullmatch(term.lower()):
            condition |= Q(session_id__startswith=term.lower())
    return condition


def parse_statuses(raw: str | None) -> list[str]:
    """``running,failed`` → ["running", "failed"]; raises ValueError on an unknown word."""
    if not raw:
        return []
    values = [v.strip() for v in raw.split(",") if v.strip()]
    for value in values:
        if value not in TaskStatus._value2member_map_:
            raise ValueError(
                ERR_STATUS.format(value=value, choices=", ".join(s.value for s in TaskStatus))
            )
    return values


def _no_nul(value: str | None) -> str | None:
    return value.replace("\x00", "") if value else value


def task_list(
    *,
    statuses: list[str] | None = None,
    team: str | None = None,
    node: str | None = None,
    route: str | None = None,
    search: str | None = None,
) -> QuerySet[Task]:
    # Query strings may carry NUL characters, which PostgreSQL refuses in a query.
    team, node, route, search = (_no_nul(v) for v in (team, node, route, search))
    qs = Task.objects.select_related("team", "node")
    if statuses:
        qs = qs.filter(status__in=statuses)
    if team:
        qs = qs.filter(team__name=team)
    if node:
        qs = qs.filter(node__name=node)
    if route == FALLBACK:
        qs = qs.filter(route=Task.Route.LOCAL).exclude(fallback_reason="")
    elif route:
        qs = qs.filter(route=route)
    if search and search.strip():
        qs = qs.filter(search_condition(search.strip()))
    return qs


def tasks_on_node(name: str) -> QuerySet[Task]:
    """The task→node reverse index: active tasks bound to the node."""
    return Task.objects.select_related("team", "node").filter(node__name=name, status__in=BOUND)


def team_nodes(team: str) -> dict[str, int]:
    """Nodes hosting the team's active tasks, with how many each hosts."""
    rows = (
        Task.objects.filter(team__name=team, status__in=BOUND, node__isnull=False)
        .values("node__name")
        .annotate(n=Count("id"))
    )
    return {row["node__name"]: row["n"] for row in rows}


def fleet_summary() -> dict[str, int]:
    """The board's tiles: nodes, tasks queued, running and failed, and the local executor's
    figures (its slots over every live hub process, runs queued for a slot and running)."""
    nodes = Node.objects.aggregate(
        total=Count("id"), ready=Count("id", filter=Q(status=Node.Status.READY))
    )
    counts: dict[tuple[str, str], int] = dict(
        ((status, route), n)
        for status, route, n in Task.objects.filter(
            status__in=["pending", "scheduled", "running", "failed"]
        )
        .values_list("status", "route")
        .annotate(n=Count("id"))
    )

    def total(status: str, route: str | None = None) -> int:
        return sum(n for (s, r), n in counts.items() if s == status and route in (None, r))

    per_hub = settings.HIVEMIND["LOCAL_CONCURRENCY"]
    hubs = HubInstance.objects.filter(
        last_seen__gte=timezone.now() - timedelta(seconds=HUB_ALIVE_SECONDS)
    ).count()
    return {
        "nodes_total": nodes["total"],
        "nodes_ready": nodes["ready"],
        "tasks_queued": total("pending") + total("scheduled"),
        "tasks_running": total("running"),
        "tasks_failed": total("failed"),
        # Routed to the local executor and waiting for one of its slots.
        "local_queued": total("pending", Task.Route.LOCAL),
        "local_running": total("running", Task.Route.LOCAL),
        "local_slots": per_hub * max(1, hubs),
    }


def team_by_name(name: str) -> Team | None:
    return Team.objects.filter(name=name).first()


def current_usage(task: Task) -> dict:
    """What the task's current attempt consumed, as its agent reported it ({} when nothing)."""
    usage = (
        TaskAttempt.objects.filter(task=task, number=task.attempts)
        .values_list("usage", flat=True)
        .first()
    )
    return usage or {}


def latest_placement(task: Task) -> dict:
    """The scheduler's record of the task's latest attempt that has one (empty before)."""
    placement = (
        task.attempt_rows.exclude(placement={})
        .order_by("-number")
        .values_list("placement", flat=True)
        .first()
    )
    return placement or {}
