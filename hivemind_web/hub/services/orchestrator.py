"""The team orchestrator: what happens after an execution-phase failure (DESIGN §1).

The team's ``on_failure`` policy decides: ``retry`` runs a new attempt (never on the node that
lost or failed the previous one) up to ``max_retries`` times, ``fallback_local`` runs one more
attempt locally, ``fail`` leaves the task failed. A task without a team is left failed.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from hivemind_web.hub.models import Task, Team
from hivemind_web.hub.services import events
from hivemind_web.hub.services.attempts import attempt_end
from hivemind_web.hub.services.node_state import release_slot
from hivemind_web.hub.services.transitions import (
    ACTIVE,
    FAILED,
    PENDING,
    _start_after_commit,
    _stop_after_commit,
    _transition,
    clean_text,
    lock_tasks,
)


def _decide(task: Task) -> str:
    team = task.team
    if team is None:
        return Team.OnFailure.FAIL
    if team.on_failure == Team.OnFailure.RETRY:
        return Team.OnFailure.RETRY if task.attempts - 1 < team.max_retries else Team.OnFailure.FAIL
    if team.on_failure == Team.OnFailure.FALLBACK_LOCAL:
        # One local attempt: if that fails too, the task stays failed.
        return Team.OnFailure.FAIL if task.force_local else Team.OnFailure.FALLBACK_LOCAL
    return Team.OnFailure.FAIL


def task_handle_failure(*, task: Task, error: str, actor: Any = None) -> Task | None:
    """Fail the task's current attempt and apply its team's policy. Call inside a transaction.

    ``task`` is what the caller read; the row is re-read under a lock, and nothing happens
    when that attempt has ended or moved on meanwhile.
    """
    seen_attempt, seen_node = task.attempts, task.node_id
    rows = lock_tasks(
        Task.objects.select_related("team").filter(
            pk=task.pk, attempts=seen_attempt, node_id=seen_node, status__in=list(ACTIVE)
        )
    )
    if not rows:
        return None
    task = rows[0]
    decision = _decide(task)
    error = clean_text(error or "failed")[:10000]
    node_name = task.node.name if task.node_id else None
    common: dict[str, Any] = {"error": error, "node": None, "progress": 0.0, "message": ""}
    if decision == Team.OnFailure.FAIL:
        done = _transition(
            task.session_id,
            task.attempts,
            ACTIVE,
            status=FAILED,
            error=error,
            finished_at=timezone.now(),
        )
        if done is None:
            return None
        release_slot(task.node_id, task.session_id)
        attempt_end(task.pk, task.attempts, FAILED, error)
        events.task_event(done, "failed", actor=actor, error=error, node=node_name)
        if node_name:  # a stalled node may still be running it
            _stop_after_commit(task)
        return done
    excluded = list(task.excluded_nodes)
    if node_name and node_name not in excluded:
        excluded.append(node_name)
    changes: dict[str, Any] = {
        **common,
        "status": PENDING,
        "attempts": F("attempts") + 1,
        "excluded_nodes": excluded,
        "route": "",
        "route_reason": "",
    }
    if decision == Team.OnFailure.FALLBACK_LOCAL:
        changes.update(
            force_local=True,
            route=Task.Route.LOCAL,
            fallback_reason=f"team policy fallback_local after: {error}",
        )
    moved = _transition(task.session_id, task.attempts, ACTIVE, **changes)
    if moved is None:
        return None
    release_slot(task.node_id, task.session_id)
    attempt_end(task.pk, task.attempts, FAILED, error)
    events.task_event(
        moved, "attempt_failed", actor=actor, error=error, node=node_name, attempt=task.attempts
    )
    events.task_event(moved, decision, attempt=moved.attempts, excluded_nodes=excluded)
    if node_name:  # a stalled node may still be running the failed attempt
        _stop_after_commit(task)
    _start_after_commit(moved)
    return moved


def tasks_fail_each(tasks: QuerySet[Task], *, error: str, actor: Any) -> list[str]:
    """Fail each task's current attempt (one transaction each, so one conflict costs one
    task); returns the session ids whose attempt this ended."""
    failed = []
    for task in tasks.select_related("team", "node"):
        with transaction.atomic():
            if task_handle_failure(task=task, error=error, actor=actor) is not None:
                failed.append(str(task.session_id))
    return failed
