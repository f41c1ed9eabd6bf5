"""The primitives every task transition is made of (DESIGN §4).

Each transition is one conditional UPDATE guarded by the statuses it may leave and by the
attempt number, so a stale or duplicate report (an old attempt, a second start, anything after
a terminal state) changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from executor_core.types import TaskStatus
from hivemind_web.hub import intents
from hivemind_web.hub.models import Node, Task

PENDING, SCHEDULED, RUNNING = TaskStatus.PENDING, TaskStatus.SCHEDULED, TaskStatus.RUNNING
SUCCEEDED, FAILED, CANCELLED = TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED
ACTIVE = (PENDING, SCHEDULED, RUNNING)
BOUND = (SCHEDULED, RUNNING)


def lock_tasks(tasks: QuerySet[Task]) -> list[Task]:
    """``tasks`` with their rows locked until the transaction ends, each with its node as
    it is now.

    The node is re-read when it needs to be: on PostgreSQL, a read that waited for the lock
    (another hub was binding the task) gets the task row as it is after the wait, its new
    ``node_id``, but keeps the node joined before the wait (none, or the old one).
    """
    rows = list(tasks.select_related("node").select_for_update(of=("self",)))
    field = Task._meta.get_field("node")
    stale = [t for t in rows if getattr(field.get_cached_value(t, None), "pk", None) != t.node_id]
    if stale:
        nodes = Node.objects.in_bulk({t.node_id for t in stale if t.node_id is not None})
        for task in stale:
            field.set_cached_value(task, nodes.get(task.node_id))
    return rows


def hub_limits() -> dict[str, Any]:
    return settings.HIVEMIND


def _start_after_commit(task: Task) -> None:
    intents.start_attempt(intents.AttemptSpec.of(task))


def _stop_after_commit(task: Task) -> None:
    """Stop the attempt where it runs: a cancel frame to its node, or the local executor."""
    intents.stop_attempt(str(task.session_id), task.node.name if task.node_id else None)


def _transition(
    session_id: Any, attempt: int | None, leaving: Iterable[str], **changes: Any
) -> Task | None:
    """The conditional update at the heart of every transition; the task when it happened."""
    qs = Task.objects.filter(session_id=session_id, status__in=list(leaving))
    if attempt is not None:
        qs = qs.filter(attempts=attempt)
    if qs.update(updated_at=timezone.now(), **changes) != 1:
        return None
    return Task.objects.select_related("team", "node").get(session_id=session_id)


def clean_text(text: str) -> str:
    """Text as the database can store it: PostgreSQL refuses NUL characters outright."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


# Why a bind did not happen (task_bind returns True when it did).
BIND_NODE_FULL = "node_full"
BIND_NOT_PENDING = "not_pending"
TRUNCATED = "\n[truncated]"


def _bounded_output(text: str) -> str:
    limit = hub_limits()["MAX_OUTPUT_BYTES"]
    text = clean_text(text or "")
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[:limit].decode(errors="ignore") + TRUNCATED
