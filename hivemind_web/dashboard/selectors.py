"""Reads for the dashboard: board snapshots, load history, team placement (selectors read only)."""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from executor_core.types import NodeAffinityPolicy, TaskStatus
from hivemind_web.hub import selectors as hub_selectors
from hivemind_web.hub.models import (
    ACTIVE_STATUSES,
    BOUND_STATUSES,
    HubSetting,
    Node,
    NodeLoadSample,
    Task,
    TaskEvent,
    Team,
)
from hivemind_web.hub.services.node_state import node_config
from hivemind_web.hub.snapshots import node_snapshot, task_snapshot

PAGE_SIZE = 50
# The plots show the last five minutes in five-second buckets: 60 points a node, whatever the
# heartbeat rate, so a snapshot of a large fleet stays small.
HISTORY_SECONDS = 300
HISTORY_BUCKET = 5
MAX_BOUND = 2000
MAX_TEAMS = 500
MAX_WATCH = 20
MAX_BULK = 500  # tasks one bulk action of the board touches
TEXT_LIMIT = 300
STATUSES = tuple(s.value for s in TaskStatus)
# Input, output and log can be large: the board never needs them, the task page reads its own.
_HEAVY = ("input", "output", "log", "excluded_nodes")
_TRIMMED = ("error", "message", "route_reason", "fallback_reason")


def lean_task(data: Mapping[str, Any]) -> dict[str, Any]:
    """A task snapshot trimmed for the board."""
    out = {k: v for k, v in data.items() if k not in _HEAVY}
    for key in _TRIMMED:
        value = out.get(key)
        if isinstance(value, str) and len(value) > TEXT_LIMIT:
            out[key] = value[:TEXT_LIMIT] + "…"
    return out


@dataclass(frozen=True)
class TaskQuery:
    """The board's task filters and page (the API's filters: statuses, team, node, route, q)."""

    statuses: tuple[str, ...] = ()
    team: str = ""
    node: str = ""
    route: str = ""
    q: str = ""
    page: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": list(self.statuses),
            "team": self.team,
            "node": self.node,
            "route": self.route,
            "q": self.q,
            "page": self.page,
        }


@dataclass(frozen=True)
class SnapshotRequest:
    """What a client wants in its snapshots: a task page, load history, task logs to stream."""

    tasks: TaskQuery | None = None
    history: tuple[str, ...] = ()
    watch: tuple[str, ...] = ()
    errors: dict[str, str] = field(default_factory=dict)


def _values(params: Mapping[str, Any], key: str) -> list[str]:
    """Every value of ``key``: repeated query keys, JSON lists and comma lists alike."""
    getlist = getattr(params, "getlist", None)
    raw: Any = getlist(key) if getlist is not None else params.get(key)
    if raw is None:
        return []
    items = raw if isinstance(raw, list | tuple) else [raw]
    values: list[str] = []
    for item in items:
        # NUL names nothing, and PostgreSQL refuses it in a query: such a value is dropped.
        values += [p.strip() for p in str(item).split(",") if p.strip() and "\x00" not in p]
    return values


def _first(params: Mapping[str, Any], key: str) -> str:
    if key != "q":
        values = _values(params, key)
    else:
        # Search text may hold commas: never split it. A socket URL's query arrives as lists.
        raw: Any = params.get(key)
        if isinstance(raw, list | tuple):
            raw = raw[0] if raw else ""
        values = [str(raw or "").strip()]
    values = [value.replace("\x00", "") for value in values]
    return values[0] if values else ""


def parse_request(params: Mapping[str, Any]) -> SnapshotRequest:
    """Read a snapshot request from query parameters or a client's JSON message.

    Bad values are dropped and reported under ``errors`` rather than refused: a board with a
    stale bookmark still opens.
    """
    errors: dict[str, str] = {}
    tasks = None
    if _first(params, "tasks") in ("1", "true"):
        statuses = []
        for value in _values(params, "status"):
            if value in STATUSES:
                statuses.append(value)
            else:
                errors["status"] = f"unknown status {value!r}"
        try:
            route = hub_selectors.parse_route(_first(params, "route"))
        except ValueError as exc:
            errors["route"] = str(exc)
            route = ""
        try:
            page = max(1, int(_first(params, "page") or 1))
        except ValueError:
            page = 1
        tasks = TaskQuery(
            statuses=tuple(dict.fromkeys(statuses)),
            team=_first(params, "team")[:63],
            node=_first(params, "node")[:63],
            route=route,
            q=_first(params, "q")[:128],
            page=page,
        )
    watch = []
    for value in _values(params, "watch")[:MAX_WATCH]:
        try:
            watch.append(str(uuid.UUID(value)))
        except ValueError:
            errors["watch"] = f"not a session id: {value!r}"
    history = tuple(_values(params, "history")[:200])
    return SnapshotRequest(tasks=tasks, history=history, watch=tuple(watch), errors=errors)


def fallback_state() -> dict[str, Any]:
    setting = HubSetting.objects.filter(pk=1).first()
    if setting is None:
        return {"enabled": False, "changed_by": ""}
    return {"enabled": setting.fallback_mode, "changed_by": setting.changed_by}


def task_page(query: TaskQuery) -> dict[str, Any]:
    qs = hub_selectors.task_list(
        statuses=list(query.statuses),
        team=query.team or None,
        node=query.node or None,
        route=query.route or None,
        search=query.q or None,
    )
    count = qs.count()
    pages = max(1, math.ceil(count / PAGE_SIZE))
    page = min(query.page, pages)
    rows = qs[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    return {
        "count": count,
        "page": page,
        "pages": pages,
        "page_size": PAGE_SIZE,
        "filters": {**query.as_dict(), "page": page},
        "results": [lean_task(task_snapshot(task)) for task in rows],
    }


def bulk_selection(query: TaskQuery | None, action: str) -> list[str]:
    """The session ids a bulk action touches: the board's filtered tasks (every page) that
    the action applies to (cancel: not yet ended; retry: failed or cancelled), at most
    MAX_BULK, newest first."""
    query = query or TaskQuery()
    qs = hub_selectors.task_list(
        statuses=list(query.statuses),
        team=query.team or None,
        node=query.node or None,
        route=query.route or None,
        search=query.q or None,
    )
    if action == "cancel":
        qs = qs.filter(status__in=list(ACTIVE_STATUSES))
    else:
        qs = qs.filter(status__in=["failed", "cancelled"])
    return [str(sid) for sid in qs.values_list("session_id", flat=True)[:MAX_BULK]]


def bound_tasks() -> list[dict[str, Any]]:
    """Every task holding a node slot, compact: what the node cards list."""
    rows = (
        Task.objects.filter(status__in=list(BOUND_STATUSES), node__isnull=False)
        .order_by("created_at")
        .values("session_id", "agent_id", "status", "progress", "node__name", "team__name")
    )[:MAX_BOUND]
    return [
        {
            "session_id": str(row["session_id"]),
            "agent_id": row["agent_id"],
            "status": row["status"],
            "progress": row["progress"],
            "node": row["node__name"],
            "team": row["team__name"],
        }
        for row in rows
    ]


def node_history(names: Iterable[str] = ("*",), *, seconds: int = HISTORY_SECONDS) -> dict:
    """``{node: [[epoch ms, cpu, mem, running], ...]}`` in HISTORY_BUCKET-second buckets.

    CPU and memory are averaged over a bucket; running is its peak (a short burst must show).
    """
    names = list(names)
    if not names:
        return {}
    qs = NodeLoadSample.objects.filter(time__gte=timezone.now() - timedelta(seconds=seconds))
    if "*" not in names:
        qs = qs.filter(node__name__in=names)
    buckets: dict[str, dict[int, list[float]]] = {}
    rows = qs.order_by("time").values_list("node__name", "time", "cpu", "mem", "running")
    for name, time, cpu, mem, running in rows.iterator(chunk_size=2000):
        index = int(time.timestamp() // HISTORY_BUCKET)
        acc = buckets.setdefault(name, {}).setdefault(index, [0.0, 0.0, 0.0, 0.0])
        acc[0] += cpu
        acc[1] += mem
        acc[2] = max(acc[2], running)
        acc[3] += 1
    return {
        name: [
            [index * HISTORY_BUCKET * 1000, round(c / n, 1), round(m / n, 1), int(r)]
            for index, (c, m, r, n) in sorted(points.items())
        ]
        for name, points in buckets.items()
    }


def board_snapshot(request: SnapshotRequest) -> dict[str, Any]:
    """Everything a page needs to be exactly right, read in one go."""
    snapshot: dict[str, Any] = {
        "type": "snapshot",
        "summary": hub_selectors.fleet_summary(),
        "fallback_mode": fallback_state(),
        "nodes": [node_snapshot(node) for node in Node.objects.all()],
        "bound": bound_tasks(),
        "teams": list(Team.objects.values_list("name", flat=True)[:MAX_TEAMS]),
        "errors": dict(request.errors),
    }
    if request.history:
        snapshot["history"] = node_history(request.history)
    if request.tasks is not None:
        snapshot["tasks"] = task_page(request.tasks)
    return snapshot


# Pages


def get_task(session_id: Any) -> Task | None:
    return Task.objects.select_related("team", "node").filter(session_id=session_id).first()


def task_events(task: Task) -> QuerySet[TaskEvent]:
    return task.events.all()


def get_node(name: str) -> Node | None:
    return Node.objects.filter(name=name).first()


@dataclass(frozen=True)
class ControlRow:
    """One line of the node page's "hub says / node reports" table."""

    what: str
    hub: str
    node: str

    @property
    def agrees(self) -> bool:
        return self.hub == self.node


def _takes_work(cordoned: bool, draining: bool, stopping: bool = False) -> str:
    if stopping:
        return "no: shutting down"
    if draining:
        return "no: draining"
    if cordoned:
        return "no: cordoned"
    return "yes"


def node_control(node: Node) -> dict[str, Any]:
    """The hub's word on the node beside the node's own last account of itself, and whether
    the node is sitting out a back-off for refusing work."""
    reported = node.reported or {}
    config = node_config(node)
    rows = []
    if reported:
        rows = [
            ControlRow(
                "Takes new work",
                _takes_work(config["cordoned"], config["draining"] or node.self_draining),
                _takes_work(reported["cordoned"], reported["draining"], reported["stopping"]),
            ),
            ControlRow("Capacity", str(config["capacity"]), str(reported["capacity"])),
            ControlRow(
                "Labels",
                ", ".join(f"{k}={v}" for k, v in sorted(config["labels"].items())) or "none",
                ", ".join(f"{k}={v}" for k, v in sorted(reported["labels"].items())) or "none",
            ),
        ]
    now = timezone.now()
    return {
        "rows": rows,
        "reported_at": reported.get("at"),
        "acknowledged": bool(reported) and reported.get("generation") == node.config_generation,
        "backed_off": node.backoff_until is not None and node.backoff_until > now,
    }


def recent_tasks_on_node(name: str, limit: int = 20) -> QuerySet[Task]:
    return (
        Task.objects.select_related("team", "node")
        .filter(node__name=name)
        .exclude(status__in=list(BOUND_STATUSES))[:limit]
    )


def team_names() -> list[str]:
    return list(Team.objects.values_list("name", flat=True)[:MAX_TEAMS])


COLOCATE = {NodeAffinityPolicy.PREFER_COLOCATE, NodeAffinityPolicy.REQUIRE_COLOCATE}
SPREAD = {NodeAffinityPolicy.PREFER_SPREAD, NodeAffinityPolicy.REQUIRE_SPREAD}


@dataclass(frozen=True)
class AffinityCheck:
    state: str  # met, not_met, not_placed, no_rule
    detail: str


def affinity_check(policy: str, node: str | None, placed: Mapping[str, int]) -> AffinityCheck:
    """Is one member's affinity rule met right now, given where the team's members run?

    ``placed`` counts the team's members bound to each node (this member included).
    """
    if policy not in COLOCATE | SPREAD:
        return AffinityCheck("no_rule", "no affinity asked")
    if not node:
        return AffinityCheck("not_placed", "not on a node")
    if policy in COLOCATE:
        if len(placed) <= 1:
            return AffinityCheck("met", f"colocated: every placed member runs on {node}")
        where = ", ".join(f"{name} ({n})" for name, n in sorted(placed.items()))
        return AffinityCheck("not_met", f"team split over {where}")
    others = placed.get(node, 1) - 1
    if others <= 0:
        return AffinityCheck("met", f"spread: alone on {node}")
    member = "member" if others == 1 else "members"
    return AffinityCheck("not_met", f"shares {node} with {others} other {member}")


@dataclass(frozen=True)
class Member:
    task: Task
    check: AffinityCheck

    @property
    def required(self) -> bool:
        return self.task.affinity in (
            NodeAffinityPolicy.REQUIRE_COLOCATE,
            NodeAffinityPolicy.REQUIRE_SPREAD,
        )


def team_members(team: Team, *, recent: int = 20) -> dict[str, Any]:
    """The team's active members with where they run and their affinity check, and recent ends."""
    active = list(
        Task.objects.select_related("team", "node")
        .filter(team=team, status__in=list(ACTIVE_STATUSES))
        .order_by("created_at")
    )
    placed = Counter(
        t.node.name for t in active if t.node_id is not None and t.status in BOUND_STATUSES
    )

    def node_of(task: Task) -> str | None:
        return task.node.name if task.node_id and task.status in BOUND_STATUSES else None

    members = [Member(t, affinity_check(t.affinity, node_of(t), placed)) for t in active]
    finished = (
        Task.objects.select_related("team", "node")
        .filter(team=team)
        .exclude(status__in=list(ACTIVE_STATUSES))[:recent]
    )
    return {"members": members, "placed": dict(sorted(placed.items())), "finished": finished}
