"""The attempt records (TaskAttempt): written beside each transition, in its transaction."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from hivemind_web.hub.models import Task, TaskAttempt

# Task status → the status its current attempt ends with.
ENDED = {"succeeded", "failed", "cancelled"}


def attempt_begin(task: Task, *, route: str, reason: str, owner: str) -> None:
    """The attempt was claimed for routing (again, after a hub restart released it)."""
    fields = {"route": route, "reason": reason, "owner": owner, "status": "routing"}
    updated = TaskAttempt.objects.filter(task=task, number=task.attempts).update(**fields)
    if not updated:
        TaskAttempt.objects.create(task=task, number=task.attempts, **fields)


def attempt_update(task_pk: int, number: int, **fields: Any) -> None:
    TaskAttempt.objects.filter(task_id=task_pk, number=number).update(**fields)


def attempt_end(task_pk: int, number: int, status: str, error: str = "") -> None:
    """The attempt is over: ``status`` is how it ended (``superseded`` by a new attempt)."""
    fields: dict[str, Any] = {"status": status, "finished_at": timezone.now()}
    if error:
        fields["error"] = error
    attempt_update(task_pk, number, **fields)
