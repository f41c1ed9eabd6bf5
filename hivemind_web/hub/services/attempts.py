"""The attempt records (TaskAttempt): written beside each transition, in its transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.utils import timezone

from hivemind_web.hub.models import TaskAttempt
from hivemind_web.hub.services import statements

Pair = tuple[int, int]  # (task pk, attempt number)


def attempts_update(pairs: Iterable[Pair], **fields: Any) -> None:
    """The same change on several attempt records, one prepared statement for all."""
    values = tuple(fields.values())
    attempts_set(tuple(fields), [(*values, task_pk, number) for task_pk, number in pairs])


def attempts_set(names: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Different values of ``names`` on several attempt records: each row is the values,
    then the task pk and the attempt number."""
    statements.update(TaskAttempt, ("task", "number"), names, rows)


def attempt_update(task_pk: int, number: int, **fields: Any) -> None:
    attempts_update([(task_pk, number)], **fields)


def attempt_end(task_pk: int, number: int, status: str, error: str = "") -> None:
    """The attempt is over: ``status`` is how it ended (``superseded`` by a new attempt)."""
    fields: dict[str, Any] = {"status": status, "finished_at": timezone.now()}
    if error:
        fields["error"] = error
    attempt_update(task_pk, number, **fields)
