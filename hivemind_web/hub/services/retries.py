"""Retrying ended tasks and acting on many tasks at once (the board's bulk actions).

A retry is a new task with the same fields as the one it retries, linked both ways
(``Task.retry_of`` and its ``retries``); only a failed or cancelled task may be retried.
Bulk actions apply one service per task, each in its own transaction, so one task that
finished meanwhile costs nothing but its own line in the answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from hivemind_web.hub.models import Task
from hivemind_web.hub.services import submission
from hivemind_web.hub.services import tasks as task_services
from hivemind_web.hub.services.errors import NotFound, TransitionError

RETRYABLE = ("failed", "cancelled")
ERR_NOT_RETRYABLE = "task {sid} is {status}: only failed or cancelled tasks can be retried"


def _fields(task: Task) -> dict[str, Any]:
    """The submission fields of ``task``, as a new submission gives them."""
    return {
        "agent_id": task.agent_id,
        "input": task.input,
        "strategy": task.strategy,
        "team": task.team.name if task.team_id else None,
        "node_selector": dict(task.node_selector),
        "affinity": task.affinity,
        "node": task.pinned_node,
        "prefer_labels": dict(task.prefer_labels),
        "capabilities": list(task.capabilities),
        "resources": dict(task.resources),
        "model": task.model,
        "priority": task.priority,
        "max_wait": task.max_wait,
        "timeout": task.timeout,
    }


def tasks_retry(*, tasks: list[Task], actor: Any, start: bool = True) -> list[Task]:
    """New tasks with the same fields as ``tasks`` (all failed or cancelled), in one go."""
    for task in tasks:
        if task.status not in RETRYABLE:
            raise TransitionError(ERR_NOT_RETRYABLE.format(sid=task.session_id, status=task.status))
    requests = submission.validate_items([_fields(t) for t in tasks])
    return submission.tasks_store(actor=actor, requests=requests, start=start, retry_of=tasks)


def task_retry(*, session_id: Any, actor: Any, start: bool = True) -> Task:
    with transaction.atomic():
        task = task_services.get_task(session_id, lock=True)
        return tasks_retry(tasks=[task], actor=actor, start=start)[0]


@dataclass
class BulkResult:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # ended or changed meanwhile

    def message(self, verb: str) -> str:
        n = len(self.done)
        text = f"{verb} {n} task{'s' if n != 1 else ''}"
        if self.skipped:
            text += f"; {len(self.skipped)} had already moved on"
        return text + "."


def tasks_cancel_each(*, session_ids: Iterable[str], actor: Any) -> BulkResult:
    result = BulkResult()
    for sid in session_ids:
        try:
            task_services.task_cancel(session_id=sid, actor=actor)
            result.done.append(sid)
        except (TransitionError, NotFound):
            result.skipped.append(sid)
    return result


def tasks_retry_each(*, session_ids: Iterable[str], actor: Any) -> BulkResult:
    result = BulkResult()
    for sid in session_ids:
        try:
            task_retry(session_id=sid, actor=actor)
            result.done.append(sid)
        except (TransitionError, NotFound):
            result.skipped.append(sid)
    return result
