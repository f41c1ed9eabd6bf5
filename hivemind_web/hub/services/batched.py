"""The hot transitions, for many calls at once; ``services.tasks`` applies them to one.

The runtime's writer applies everything queued in one transaction (DESIGN §10). When it holds
several calls of one transition, it hands them here together: the rows are read and locked
in one query, every guard of a transition (the status it leaves, the attempt, the node) is
checked on them in Python under that lock, and the changes go back in a few statements
(executemany, one insert of the audit events), so a busy hub pays a handful of statements
per batch rather than per task. Each function returns one result per call.

A failure is decided by the team orchestrator, call by call.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from django.db import connection
from django.utils import timezone

from hivemind_web.hub import broadcast, intents
from hivemind_web.hub.models import Node, Task, TaskAttempt, Team
from hivemind_web.hub.services import events, statements
from hivemind_web.hub.services.attempts import attempts_set
from hivemind_web.hub.services.node_state import lock_node_rows, read_nodes, release_slots
from hivemind_web.hub.services.orchestrator import task_handle_failure
from hivemind_web.hub.services.rows import set_fields
from hivemind_web.hub.services.transitions import (
    ACTIVE,
    BIND_NODE_FULL,
    BIND_NOT_PENDING,
    FAILED,
    PENDING,
    RUNNING,
    SCHEDULED,
    SUCCEEDED,
    _bounded_output,
    clean_text,
    hub_limits,
)

Calls = list[dict[str, Any]]


# What a transition reads of a task: all but the columns that can be large (a transition
# that needs one reads the row again through the ORM).
TASK_COLUMNS = tuple(
    f.name for f in Task._meta.concrete_fields if f.name not in ("input", "output", "log")
)
# What a transition reads of the rows it locks: TASK_COLUMNS but the placement constraints
# and the provenance, which no transition or board event looks at (the JSON columns among
# them cost a decode each, on every read).
LOCKED_COLUMNS = tuple(
    name
    for name in TASK_COLUMNS
    if name
    not in (
        "excluded_nodes",
        "prefer_labels",
        "capabilities",
        "resources",
        "max_wait",
        "force_local",
        "submitted_by",
        "retry_of",
    )
)
NODE_OF_TASK = ("name", "connection_epoch")
TEAM_COLUMNS = tuple(f.name for f in Team._meta.concrete_fields)


# A bind takes k slots only while the node is ready and has k free (DESIGN §3).
TAKE_SLOTS = (
    f"UPDATE {statements.table(Node)} SET {statements.column(Node, 'running')} = "
    f"{statements.column(Node, 'running')} + %s, {statements.column(Node, 'updated_at')} = %s "
    f"WHERE {statements.column(Node, 'name')} = %s AND {statements.column(Node, 'status')} = %s "
    f"AND {statements.column(Node, 'running')} <= {statements.column(Node, 'capacity')} - %s"
)


def locked(session_ids: Iterable[str], *, log: bool = False) -> dict[str, Task]:
    """The tasks, their rows locked until the transaction ends, each with its node and team
    as they are now (read after the lock: another hub may have just bound the task)."""
    where, params = statements.where_in(Task, "session_id", list(session_ids))
    columns = (*LOCKED_COLUMNS, "log") if log else LOCKED_COLUMNS
    rows = statements.select(Task, columns, where, params, lock=True)
    attach(rows, "node", Node, NODE_OF_TASK)
    attach(rows, "team", Team, TEAM_COLUMNS)
    return {str(task.session_id): task for task in rows}


def attach(rows: list[Task], name: str, model: type, columns: tuple[str, ...]) -> None:
    """Read the rows' ``name`` objects in one query and cache them on the rows."""
    field = Task._meta.get_field(name)
    keys = {getattr(t, field.attname) for t in rows} - {None}
    found = {}
    if keys:
        where, params = statements.where_in(model, "id", sorted(keys))
        found = {obj.pk: obj for obj in statements.select(model, columns, where, params)}
    for task in rows:
        field.set_cached_value(task, found.get(getattr(task, field.attname)))


def _from_current_connection(task: Task, call: dict[str, Any]) -> bool:
    """A node's report counts only from the connection holding its identity (DESIGN §13)."""
    epoch = call.get("epoch")
    return epoch is None or (task.node is not None and task.node.connection_epoch == epoch)


def _save(changed: list[Task], fields: list[str]) -> None:
    if changed:
        set_fields(changed, [*fields, "updated_at"])


def mark_running_many(calls: Calls) -> list[bool]:
    now = timezone.now()
    rows = locked(c["session_id"] for c in calls)
    results, changed, started = [], [], []
    for call in calls:
        task, node_name = rows.get(call["session_id"]), call.get("node_name")
        if task is None or task.attempts != call["attempt"]:
            results.append(False)
            continue
        if node_name is None:
            ok = task.status == PENDING
            if ok:
                task.owner, task.route = call.get("owner", ""), Task.Route.LOCAL
        else:
            ok = (
                task.status == SCHEDULED
                and task.node_id
                and task.node.name == node_name
                and _from_current_connection(task, call)
            )
        if ok:
            task.status, task.started_at, task.updated_at = RUNNING, call.get("at") or now, now
            if task.timeout:
                task.timeout_at = task.started_at + timedelta(seconds=task.timeout)
            changed.append(task)
            started.append((task, "started", None, {"node": node_name, "attempt": task.attempts}))
        results.append(bool(ok))
    _save(changed, ["status", "started_at", "owner", "route", "timeout_at"])
    attempts_set(
        ("status", "started_at"), [("running", t.started_at, t.pk, t.attempts) for t in changed]
    )
    events.task_events(started)
    return results


def mark_routed_many(calls: Calls) -> list[bool]:
    now = timezone.now()
    rows = locked(c["session_id"] for c in calls)
    results, changed, routed = [], [], []
    for call in calls:
        task = rows.get(call["session_id"])
        ok = (
            task is not None
            and task.attempts == call["attempt"]
            and task.status == PENDING
            and task.route_reason == ""
        )
        if ok:
            route = call["route"]
            reason = call["reason"] or f"strategy {route}"
            task.route, task.route_reason, task.owner = route, reason, call.get("owner", "")
            task.updated_at = now
            changed.append(task)
            routed.append((task, "routed", None, {"route": route, "reason": reason}))
        results.append(ok)
    _save(changed, ["route", "route_reason", "owner"])
    # Re-claimed attempts (a hub restart released them) already have a record: refresh it.
    statements.insert_values(
        TaskAttempt,
        [
            {
                "task_id": t.pk,
                "number": t.attempts,
                "route": t.route,
                "reason": t.route_reason,
                "owner": t.owner,
            }
            for t in changed
        ],
        conflict=("task", "number"),
        refresh=("status", "route", "reason", "owner"),
    )
    events.task_events(routed)
    return results


def bind_many(calls: Calls) -> list[bool | str]:
    """Binds grouped by node: one conditional UPDATE takes all of a node's slots at once;
    when the node cannot take them all, its binds are tried one by one."""
    now = timezone.now()
    now_db = Node._meta.get_field("updated_at").get_db_prep_save(now, connection)
    rows = locked(c["session_id"] for c in calls)
    results: list[bool | str | None] = [None] * len(calls)
    by_node: dict[str, list[int]] = defaultdict(list)
    for i, call in enumerate(calls):
        task = rows.get(call["session_id"])
        if (
            task is None
            or task.attempts != call["attempt"]
            or task.status != PENDING
            or (call.get("owner") and task.owner != call["owner"])
        ):
            results[i] = BIND_NOT_PENDING
        else:
            by_node[call["node_name"]].append(i)
    nodes = {n.name: n for n in read_nodes(*statements.where_in(Node, "name", list(by_node)))}
    changed, scheduled, touched, placements = [], [], [], {}
    if by_node:
        lock_node_rows()
    for name, indexes in sorted(by_node.items()):
        k = len(indexes)
        taken = statements.execute(TAKE_SLOTS, [k, now_db, name, Node.Status.READY, k])
        if not taken or name not in nodes:
            for i in indexes:  # not room for all: first come, first served
                results[i] = bind_many([calls[i]])[0] if k > 1 else BIND_NODE_FULL
            continue
        node = nodes[name]
        # What the UPDATE did, on the row read before it (no second read for the board).
        node.running, node.updated_at = node.running + k, now
        touched.append(node)
        for i in indexes:
            call, task = calls[i], rows[calls[i]["session_id"]]
            task.status, task.node, task.route, task.updated_at = (
                SCHEDULED,
                node,
                Task.Route.GOLEM,
                now,
            )
            if call.get("route_reason"):  # the route changed since it was claimed
                task.route_reason = call["route_reason"]
            changed.append(task)
            data = {"node": name, "attempt": task.attempts, "placement": call.get("reason", "")}
            scheduled.append((task, "scheduled", None, data))
            placements[(task.pk, task.attempts)] = {
                **(call.get("record") or {}),
                "node": name,
                "score": call.get("score", 0.0),
                "reason": data["placement"],
            }
            results[i] = True
    _save(changed, ["status", "node", "route", "route_reason"])
    attempts_set(
        ("placement", "route", "node", "status"),
        [
            (placement, Task.Route.GOLEM, placement["node"], "scheduled", task_pk, number)
            for (task_pk, number), placement in placements.items()
        ],
    )
    for node in touched:
        events.publish_node(node)
    events.task_events(scheduled)
    return results  # type: ignore[return-value]


def apply_progress(rows: Mapping[str, Task], updates: Mapping[str, dict[str, Any]]) -> list[Task]:
    """Coalesced progress and log lines (``{session_id: {pct, message, lines, node}}``) onto
    tasks already locked (read with their log where lines came). Only tasks still active on
    the reporting node change; a log keeps its last MAX_LOG_LINES lines."""
    changed: list[Task] = []
    max_lines = hub_limits()["MAX_LOG_LINES"]
    by_fields: dict[tuple[str, ...], list[Task]] = defaultdict(list)
    now = timezone.now()
    for sid, update in updates.items():
        task = rows.get(sid)
        if task is None or task.status not in ACTIVE:
            continue
        if "node" in update and update["node"] != (task.node.name if task.node_id else None):
            continue  # a report from where the task no longer runs
        fields: tuple[str, ...] = ("updated_at",)
        task.updated_at = now
        if update.get("pct") is not None:
            task.progress = max(task.progress, min(100.0, float(update["pct"])))
            task.message = clean_text(update.get("message") or "")[:1000]
            fields += ("progress", "message")
        if update.get("lines"):
            lines = [clean_text(str(x))[:2000] for x in update["lines"]]
            task.log = (task.log + lines)[-max_lines:]
            fields += ("log",)
            broadcast.send_after_commit(
                broadcast.task_group(sid),
                {"type": "task.log", "session_id": sid, "lines": update["lines"]},
            )
        by_fields[fields].append(task)
        events.publish_task(task)
        changed.append(task)
    for fields, tasks in by_fields.items():
        set_fields(tasks, list(fields))
    return changed


def finish_many(calls: Calls) -> list[Task | None]:
    """Ends of attempts, each after its last progress report when it carries one; a failure
    is the team orchestrator's to decide."""
    now = timezone.now()
    reports = {c["session_id"]: c["progress"] for c in calls if c.get("progress")}
    lines = any(report.get("lines") for report in reports.values())
    rows = locked((c["session_id"] for c in calls), log=lines)
    if reports:
        apply_progress(rows, reports)
    results: list[Task | None] = [None] * len(calls)
    changed, ended, freed = [], [], Counter()
    errors: dict[tuple[int, int], str] = {}
    usages: list[tuple[tuple[int, int], dict[str, Any]]] = []
    for i, call in enumerate(calls):
        task, node_name = rows.get(call["session_id"]), call.get("node_name")
        if (
            task is None
            or task.attempts != call["attempt"]
            or task.status not in ACTIVE
            or (node_name is not None and (not task.node_id or task.node.name != node_name))
            or not _from_current_connection(task, call)
        ):
            continue
        if call.get("usage"):  # whatever the outcome: a failed call may have cost tokens
            usages.append(((task.pk, task.attempts), dict(call["usage"])))
        status = call["status"]
        if status == FAILED:
            error, actor = call.get("error", ""), call.get("actor") or node_name
            results[i] = task_handle_failure(task=task, error=error, actor=actor)
            continue
        node_id = task.node_id
        task.status, task.finished_at, task.updated_at = status, call.get("at") or now, now
        task.output = _bounded_output(call.get("output", ""))
        if status == SUCCEEDED:
            task.progress = 100.0
        if call.get("error"):
            task.error = clean_text(call["error"])[:10000]
            errors[(task.pk, task.attempts)] = task.error
        changed.append(task)
        if node_id is not None:
            freed[node_id] += 1
        intents.attempt_ended(call["session_id"])
        actor = call.get("actor") or node_name
        ended.append((task, status, actor, {"node": node_name}))
        results[i] = task
    _save(changed, ["status", "finished_at", "output", "progress", "error"])
    attempts_set(
        ("status", "finished_at", "error"),
        [
            (t.status, t.finished_at, errors.get((t.pk, t.attempts), ""), t.pk, t.attempts)
            for t in changed
        ],
    )
    attempts_set(("usage",), [(usage, *pair) for pair, usage in usages])
    release_slots(freed)
    events.task_events(ended)
    return results
