"""Task services: submission and every lifecycle transition (DESIGN §4).

Each transition is one conditional UPDATE guarded by the statuses it may leave and by the
attempt number, so a stale or duplicate report (an old attempt, a second start, anything after
a terminal state) changes nothing. Every transition that happens appends a TaskEvent.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from hivemind_web.hub.models import Task
from hivemind_web.hub.services import batched, events
from hivemind_web.hub.services.attempts import attempt_end, attempt_update
from hivemind_web.hub.services.errors import (
    NotFound,
    TransitionError,
)
from hivemind_web.hub.services.node_state import release_slot
from hivemind_web.hub.services.retry import retry_deadlocks
from hivemind_web.hub.services.transitions import (
    ACTIVE,
    BOUND,
    CANCELLED,
    PENDING,
    SCHEDULED,
    _start_after_commit,
    _stop_after_commit,
    _transition,
    lock_tasks,
)

ERR_TERMINAL = "task {sid} is already {status}"
ERR_ALREADY_LOCAL = "task {sid} already runs locally"


def get_task(session_id: Any, *, lock: bool = False) -> Task:
    """The task, or NotFound. ``lock`` holds its row until the transaction ends, so what a
    transition read (its node, its attempt) cannot change under it."""
    try:
        uuid.UUID(str(session_id))
    except ValueError:
        raise NotFound(f"no task {session_id}") from None
    if lock:
        rows = lock_tasks(Task.objects.select_related("team").filter(session_id=session_id))
    else:
        rows = list(Task.objects.select_related("team", "node").filter(session_id=session_id))
    if not rows:
        raise NotFound(f"no task {session_id}")
    return rows[0]


@transaction.atomic
def task_mark_routed(
    *, session_id: str, attempt: int, route: str, reason: str, owner: str = ""
) -> bool:
    """Claim the attempt for routing: only one router (of any hub process) wins it."""
    call = {"session_id": session_id, "attempt": attempt, "route": route, "reason": reason}
    return batched.mark_routed_many([{**call, "owner": owner}])[0]


@transaction.atomic
def task_record_fallback(
    *, session_id: str, attempt: int, reason: str, record: dict[str, Any] | None = None
) -> bool:
    """A scheduling-phase failure: the attempt runs locally instead, reason kept on the task
    (``record``: the scheduler's account of the failed decision, kept on the attempt)."""
    task = _transition(
        session_id,
        attempt,
        [PENDING],
        route=Task.Route.LOCAL,
        route_reason=f"fell back to local: {reason}",
        fallback_reason=reason,
        node=None,
        wait_until=None,
        waiting_reason="",
    )
    if task is not None:
        fields: dict[str, Any] = {"route": Task.Route.LOCAL, "fallback_reason": reason, "node": ""}
        if record:
            fields["placement"] = record
        attempt_update(task.pk, attempt, **fields)
        events.task_event(task, "fallback", reason=reason)
    return task is not None


@transaction.atomic
def task_bind(
    *,
    session_id: str,
    attempt: int,
    node_name: str,
    reason: str = "",
    score: float = 0.0,
    record: dict[str, Any] | None = None,
    route_reason: str = "",
    owner: str = "",
) -> bool | str:
    """The optimistic bind (DESIGN §3): take a slot on the node only if one is free.
    True when bound, else why not (BIND_NODE_FULL, BIND_NOT_PENDING). ``record``: the
    scheduler's placement record, kept on the attempt; ``route_reason``: a new reason for
    the route, when it changed since the attempt was routed; ``owner``: bind only if this
    hub process routed the attempt (its routing may be in the same batch, just before)."""
    call = {"session_id": session_id, "attempt": attempt, "node_name": node_name}
    call.update(reason=reason, score=score, record=record, route_reason=route_reason, owner=owner)
    return batched.bind_many([call])[0]


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
    *,
    session_id: str,
    attempt: int,
    node_name: str | None = None,
    owner: str = "",
    epoch: int | None = None,
    at: datetime | None = None,
) -> bool:
    """pending → running (local) or scheduled → running on ``node_name`` (it accepted;
    ``epoch``: on the connection holding the node's identity). ``at``: when the hub heard
    it started (the write lands a little later), else now."""
    call = {"session_id": session_id, "attempt": attempt, "node_name": node_name, "epoch": epoch}
    return batched.mark_running_many([{**call, "owner": owner, "at": at}])[0]


def task_record_progress(updates: Mapping[str, dict[str, Any]]) -> list[Task]:
    """Persist coalesced progress and log lines: ``{session_id: {pct, message, lines}}``.

    Only non-terminal tasks are touched; a task's log keeps its last MAX_LOG_LINES lines.
    """
    with_lines = any(update.get("lines") for update in updates.values())
    # Atomic alone; inside the writer's batch, which is atomic already, no savepoint.
    with transaction.atomic(savepoint=False):
        return batched.apply_progress(batched.locked(updates, log=with_lines), updates)


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
    epoch: int | None = None,
    usage: Mapping[str, Any] | None = None,
    at: datetime | None = None,
    progress: dict[str, Any] | None = None,
) -> Task | None:
    """Record an attempt's end (and what it consumed, on the attempt). A failure goes to the
    team orchestrator, which may retry. ``epoch``: a node's report, from the connection
    holding its identity. ``at``: when the hub heard of the end, else now. ``progress``:
    the attempt's last coalesced report (``task_record_progress``'s form), written first."""
    call = {"session_id": session_id, "attempt": attempt, "status": status, "output": output}
    call.update(error=error, node_name=node_name, actor=actor, epoch=epoch, usage=usage or {})
    call.update(at=at, progress=progress)
    return batched.finish_many([call])[0]


@retry_deadlocks
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


@retry_deadlocks
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
        wait_until=None,  # out of the wait queue: it runs locally now
        waiting_reason="",
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
