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
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.db.models import F
from django.utils import timezone

from hivemind_web.hub import intents
from hivemind_web.hub.models import Node, Task, TaskAttempt
from hivemind_web.hub.services import events
from hivemind_web.hub.services.attempts import attempt_records, attempts_update
from hivemind_web.hub.services.node_state import release_slots
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
    lock_tasks,
)

Calls = list[dict[str, Any]]


def locked(session_ids: Iterable[str]) -> dict[str, Task]:
    rows = lock_tasks(
        Task.objects.select_related("team")
        .filter(session_id__in=list(session_ids))
        .order_by("pk")  # one lock order for every hub process
    )
    return {str(task.session_id): task for task in rows}


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
            task.status, task.started_at, task.updated_at = RUNNING, now, now
            if task.timeout:
                task.timeout_at = now + timedelta(seconds=task.timeout)
            changed.append(task)
            started.append((task, "started", None, {"node": node_name, "attempt": task.attempts}))
        results.append(bool(ok))
    _save(changed, ["status", "started_at", "owner", "route", "timeout_at"])
    attempts_update([(t.pk, t.attempts) for t in changed], status="running", started_at=now)
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
    existing = set(
        TaskAttempt.objects.filter(
            task__in=[t.pk for t in changed], number__in={t.attempts for t in changed}
        ).values_list("task_id", "number")
    )
    fresh = []
    for task in changed:
        fields = {"route": task.route, "reason": task.route_reason, "owner": task.owner}
        if (task.pk, task.attempts) in existing:
            TaskAttempt.objects.filter(task=task, number=task.attempts).update(
                status="routing", **fields
            )
        else:
            fresh.append(TaskAttempt(task=task, number=task.attempts, **fields))
    TaskAttempt.objects.bulk_create(fresh, batch_size=200)
    events.task_events(routed)
    return results


def bind_many(calls: Calls) -> list[bool | str]:
    """Binds grouped by node: one conditional UPDATE takes all of a node's slots at once;
    when the node cannot take them all, its binds are tried one by one."""
    now = timezone.now()
    rows = locked(c["session_id"] for c in calls)
    results: list[bool | str | None] = [None] * len(calls)
    by_node: dict[str, list[int]] = defaultdict(list)
    for i, call in enumerate(calls):
        task = rows.get(call["session_id"])
        if task is None or task.attempts != call["attempt"] or task.status != PENDING:
            results[i] = BIND_NOT_PENDING
        else:
            by_node[call["node_name"]].append(i)
    nodes = {n.name: n for n in Node.objects.filter(name__in=list(by_node))}
    changed, scheduled, touched, placements = [], [], [], {}
    for name, indexes in sorted(by_node.items()):
        k = len(indexes)
        taken = Node.objects.filter(
            name=name, status=Node.Status.READY, running__lte=F("capacity") - k
        ).update(running=F("running") + k, updated_at=now)
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
    records = attempt_records(placements)
    for record in records:
        record.placement = placements[(record.task_id, record.number)]
        record.route, record.node = Task.Route.GOLEM, record.placement["node"]
        record.status = "scheduled"
    if records:
        set_fields(records, ["placement", "route", "node", "status"])
    for node in touched:
        events.publish_node(node)
    events.task_events(scheduled)
    return results  # type: ignore[return-value]


def finish_many(calls: Calls) -> list[Task | None]:
    """Ends of attempts; a failure is the team orchestrator's to decide."""
    now = timezone.now()
    rows = locked(c["session_id"] for c in calls)
    results: list[Task | None] = [None] * len(calls)
    changed, ended, freed = [], [], Counter()
    by_status: dict[str, list[tuple[int, int]]] = defaultdict(list)
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
        task.status, task.finished_at, task.updated_at = status, now, now
        task.output = _bounded_output(call.get("output", ""))
        if status == SUCCEEDED:
            task.progress = 100.0
        if call.get("error"):
            task.error = clean_text(call["error"])[:10000]
            errors[(task.pk, task.attempts)] = task.error
        changed.append(task)
        by_status[status].append((task.pk, task.attempts))
        if node_id is not None:
            freed[node_id] += 1
        intents.attempt_ended(call["session_id"])
        actor = call.get("actor") or node_name
        ended.append((task, status, actor, {"node": node_name}))
        results[i] = task
    _save(changed, ["status", "finished_at", "output", "progress", "error"])
    for status, pairs in by_status.items():
        plain = [p for p in pairs if p not in errors]
        attempts_update(plain, status=status, finished_at=now)
        for pair in pairs:
            if pair in errors:
                attempts_update([pair], status=status, finished_at=now, error=errors[pair])
    for pair, usage in usages:
        attempts_update([pair], usage=usage)
    release_slots(freed)
    events.task_events(ended)
    return results
