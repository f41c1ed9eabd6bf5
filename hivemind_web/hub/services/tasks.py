"""Task services: submission and every lifecycle transition (DESIGN §4).

Each transition is one conditional UPDATE guarded by the statuses it may leave and by the
attempt number, so a stale or duplicate report (an old attempt, a second start, anything after
a terminal state) changes nothing. Every transition that happens appends a TaskEvent.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from hivemind_web.hub import broadcast
from hivemind_web.hub.models import Node, Task
from hivemind_web.hub.services import events
from hivemind_web.hub.services.attempts import attempt_begin, attempt_end, attempt_update
from hivemind_web.hub.services.errors import (
    NotFound,
    TransitionError,
)
from hivemind_web.hub.services.node_state import release_slot
from hivemind_web.hub.services.orchestrator import task_handle_failure
from hivemind_web.hub.services.transitions import (
    ACTIVE,
    BOUND,
    CANCELLED,
    FAILED,
    PENDING,
    RUNNING,
    SCHEDULED,
    SUCCEEDED,
    _start_after_commit,
    _stop_after_commit,
    _transition,
    clean_text,
    hub_limits,
)

# Why a bind did not happen (task_bind returns True when it did).
BIND_NODE_FULL = "node_full"
BIND_NOT_PENDING = "not_pending"
ERR_TERMINAL = "task {sid} is already {status}"
ERR_ALREADY_LOCAL = "task {sid} already runs locally"
TRUNCATED = "\n[truncated]"


def get_task(session_id: Any, *, lock: bool = False) -> Task:
    """The task, or NotFound. ``lock`` holds its row until the transaction ends, so what a
    transition read (its node, its attempt) cannot change under it."""
    qs = Task.objects.select_related("team", "node")
    if lock:
        qs = qs.select_for_update(of=("self",))
    try:
        uuid.UUID(str(session_id))
        return qs.get(session_id=session_id)
    except (ValueError, Task.DoesNotExist):
        raise NotFound(f"no task {session_id}") from None


@transaction.atomic
def task_mark_routed(
    *, session_id: str, attempt: int, route: str, reason: str, owner: str = ""
) -> bool:
    """Claim the attempt for routing: only one router (of any hub process) wins it."""
    reason = reason or f"strategy {route}"
    qs = Task.objects.filter(
        session_id=session_id, attempts=attempt, status=PENDING, route_reason=""
    )
    task = None
    changes = {"route": route, "route_reason": reason, "owner": owner}
    if qs.update(updated_at=timezone.now(), **changes) == 1:
        task = Task.objects.select_related("team", "node").get(session_id=session_id)
    if task is not None:
        attempt_begin(task, route=route, reason=reason, owner=owner)
        events.task_event(task, "routed", route=route, reason=reason)
    return task is not None


@transaction.atomic
def task_record_fallback(*, session_id: str, attempt: int, reason: str) -> bool:
    """A scheduling-phase failure: the attempt runs locally instead, reason kept on the task."""
    task = _transition(
        session_id,
        attempt,
        [PENDING],
        route=Task.Route.LOCAL,
        route_reason=f"fell back to local: {reason}",
        fallback_reason=reason,
        node=None,
    )
    if task is not None:
        attempt_update(task.pk, attempt, route=Task.Route.LOCAL, fallback_reason=reason, node="")
        events.task_event(task, "fallback", reason=reason)
    return task is not None


@transaction.atomic
def task_bind(
    *, session_id: str, attempt: int, node_name: str, reason: str = "", score: float = 0.0
) -> bool | str:
    """The optimistic bind (DESIGN §3): take a slot on the node only if one is free.
    True when bound, else why not (BIND_NODE_FULL, BIND_NOT_PENDING)."""
    now = timezone.now()
    taken = Node.objects.filter(
        name=node_name, status=Node.Status.READY, running__lt=F("capacity")
    ).update(running=F("running") + 1, updated_at=now)
    if taken != 1:
        return BIND_NODE_FULL
    node = Node.objects.get(name=node_name)
    task = _transition(
        session_id, attempt, [PENDING], status=SCHEDULED, node=node, route=Task.Route.GOLEM
    )
    if task is None:
        transaction.set_rollback(True)
        return BIND_NOT_PENDING
    attempt_update(
        task.pk,
        attempt,
        route=Task.Route.GOLEM,
        node=node_name,
        status="scheduled",
        placement={"node": node_name, "score": score, "reason": reason},
    )
    events.task_event(task, "scheduled", node=node_name, attempt=attempt, placement=reason)
    events.publish_node(node)
    return True


@transaction.atomic
def task_unbind(*, session_id: str, attempt: int, reason: str) -> bool:
    """Undo a bind whose node never accepted; the task is pending again, its slot returned."""
    task = Task.objects.filter(session_id=session_id).first()
    if task is None:
        return False
    node_id = task.node_id
    moved = _transition(
        session_id, attempt, [SCHEDULED], status=PENDING, node=None, route_reason=""
    )
    if moved is None:
        return False
    release_slot(node_id, session_id)
    attempt_update(moved.pk, attempt, node="", status="routing", placement={})
    events.task_event(moved, "unbound", reason=reason)
    return True


@transaction.atomic
def task_mark_running(
    *, session_id: str, attempt: int, node_name: str | None = None, owner: str = ""
) -> bool:
    """pending → running (local) or scheduled → running on ``node_name`` (it accepted)."""
    now = timezone.now()
    if node_name is None:
        task = _transition(
            session_id,
            attempt,
            [PENDING],
            status=RUNNING,
            started_at=now,
            owner=owner,
            route=Task.Route.LOCAL,
        )
    else:
        qs = Task.objects.filter(
            session_id=session_id, attempts=attempt, status=SCHEDULED, node__name=node_name
        )
        task = None
        if qs.update(status=RUNNING, started_at=now, updated_at=now) == 1:
            task = Task.objects.select_related("team", "node").get(session_id=session_id)
    if task is not None:
        attempt_update(task.pk, attempt, status="running", started_at=now)
        events.task_event(task, "started", node=node_name, attempt=attempt)
    return task is not None


def _bounded_output(text: str) -> str:
    limit = hub_limits()["MAX_OUTPUT_BYTES"]
    text = clean_text(text or "")
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[:limit].decode(errors="ignore") + TRUNCATED


def task_record_progress(updates: Mapping[str, dict[str, Any]]) -> list[Task]:
    """Persist coalesced progress and log lines: ``{session_id: {pct, message, lines}}``.

    Only non-terminal tasks are touched; a task's log keeps its last MAX_LOG_LINES lines.
    """
    changed: list[Task] = []
    max_lines = hub_limits()["MAX_LOG_LINES"]
    with transaction.atomic():
        tasks = (
            Task.objects.select_related("node")
            .select_for_update(of=("self",))
            .filter(session_id__in=list(updates), status__in=list(ACTIVE))
        )
        for task in tasks:
            update = updates[str(task.session_id)]
            if "node" in update and update["node"] != (task.node.name if task.node_id else None):
                continue  # a report from where the task no longer runs
            fields = ["updated_at"]
            if update.get("pct") is not None:
                task.progress = max(task.progress, min(100.0, float(update["pct"])))
                task.message = clean_text(update.get("message") or "")[:1000]
                fields += ["progress", "message"]
            if update.get("lines"):
                lines = [clean_text(str(x))[:2000] for x in update["lines"]]
                task.log = (task.log + lines)[-max_lines:]
                fields.append("log")
            task.save(update_fields=fields)
            events.publish_task(task)
            if update.get("lines"):
                broadcast.send_after_commit(
                    broadcast.task_group(str(task.session_id)),
                    {
                        "type": "task.log",
                        "session_id": str(task.session_id),
                        "lines": update["lines"],
                    },
                )
            changed.append(task)
    return changed


@transaction.atomic
def task_finish(
    *,
    session_id: str,
    attempt: int,
    status: str,
    output: str = "",
    error: str = "",
    node_name: str | None = None,
    actor: Any = None,
) -> Task | None:
    """Record an attempt's end. A failure goes to the team orchestrator, which may retry."""
    qs = Task.objects.select_related("team", "node").select_for_update(of=("self",))
    qs = qs.filter(session_id=session_id, attempts=attempt, status__in=list(ACTIVE))
    if node_name is not None:
        qs = qs.filter(node__name=node_name)
    task = qs.first()
    if task is None:
        return None
    if status == FAILED:
        return task_handle_failure(task=task, error=error, actor=actor or node_name)
    now = timezone.now()
    changes: dict[str, Any] = {
        "status": status,
        "finished_at": now,
        "output": _bounded_output(output),
    }
    if status == SUCCEEDED:
        changes["progress"] = 100.0
    if error:
        changes["error"] = clean_text(error)[:10000]
    done = _transition(session_id, attempt, ACTIVE, **changes)
    if done is None:
        return None
    release_slot(task.node_id, session_id)
    attempt_end(task.pk, attempt, status, changes.get("error", ""))
    events.task_event(done, status, actor=actor or node_name, node=node_name)
    return done


@transaction.atomic
def task_cancel(*, session_id: Any, actor: Any) -> Task:
    """Cancel a task wherever it is; a finished task cannot be cancelled (409)."""
    task = get_task(session_id, lock=True)
    if task.is_terminal:
        raise TransitionError(ERR_TERMINAL.format(sid=task.session_id, status=task.status))
    done = _transition(task.session_id, None, ACTIVE, status=CANCELLED, finished_at=timezone.now())
    if done is None:  # finished between our read and the update
        task.refresh_from_db()
        raise TransitionError(ERR_TERMINAL.format(sid=task.session_id, status=task.status))
    release_slot(task.node_id, task.session_id)
    attempt_end(task.pk, task.attempts, CANCELLED)
    events.task_event(done, "cancelled", actor=actor)
    _stop_after_commit(task)
    return done


@transaction.atomic
def task_force_fallback(*, session_id: Any, actor: Any) -> Task:
    """Run the task locally now: a remote attempt is cancelled on its node (audited)."""
    task = get_task(session_id, lock=True)
    if task.is_terminal:
        raise TransitionError(ERR_TERMINAL.format(sid=task.session_id, status=task.status))
    if task.route == Task.Route.LOCAL:
        raise TransitionError(ERR_ALREADY_LOCAL.format(sid=task.session_id))
    reason = f"forced to local by {events.actor_name(actor)}"
    moved = _transition(
        task.session_id,
        task.attempts,
        ACTIVE,
        status=PENDING,
        node=None,
        route=Task.Route.LOCAL,
        force_local=True,
        fallback_reason=reason,
        route_reason="",
        attempts=F("attempts") + 1,
        progress=0.0,
        message="",
    )
    if moved is None:
        raise TransitionError(f"task {task.session_id} changed meanwhile; try again")
    release_slot(task.node_id, task.session_id)
    attempt_end(task.pk, task.attempts, "superseded", reason)
    events.task_event(
        moved, "force_fallback", actor=actor, from_node=task.node.name if task.node_id else None
    )
    if task.status in BOUND:
        _stop_after_commit(task)
    _start_after_commit(moved)
    return moved
