"""Which service calls the writer may apply many at once, and with what (DESIGN §10).

The single forms in ``services.tasks`` are the many-at-once forms of ``services.batched``
applied to one call; the writer, holding several calls of one of them, applies the
many-at-once form to all of them together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from hivemind_web.hub.models import Task
from hivemind_web.hub.services import batched, submission, tasks, waiting

Calls = list[dict[str, Any]]


def progress_many(calls: Calls) -> list[list[Task]]:
    """Coalesced progress of several flushes, written as one (they concern other tasks)."""
    merged: dict[str, dict[str, Any]] = {}
    for call in calls:
        merged.update(call["updates"])
    changed = tasks.task_record_progress(updates=merged)
    return [changed] * len(calls)


def _session(kwargs: dict[str, Any]) -> list[Any]:
    return [kwargs["session_id"]]


def _no_sessions(kwargs: dict[str, Any]) -> list[Any]:
    return []  # new tasks: no call queued before them concerns them


def _updated_sessions(kwargs: dict[str, Any]) -> list[Any]:
    return list(kwargs["updates"])


def _claimed_sessions(kwargs: dict[str, Any]) -> list[Any]:
    return [claim["session_id"] for claim in kwargs["claims"]]


def heads_many(calls: Calls) -> list[Any]:
    return [waiting.waiting_heads(**call) for call in calls]


class Batched(NamedTuple):
    """A call's many-at-once form, and which tasks a call concerns (calls on one task are
    never gathered together: they must land in order). ``last``: applied after everything
    else in its batch, seeing all of it (the wait queue: its reads and claims want every
    slot the batch frees, and need no place in the order)."""

    many: Callable[[Calls], list[Any]]
    sessions: Callable[[dict[str, Any]], list[Any]] = _session
    last: bool = False


BATCHED: dict[Callable[..., Any], Batched] = {
    tasks.task_mark_running: Batched(batched.mark_running_many),
    tasks.task_mark_routed: Batched(batched.mark_routed_many),
    tasks.task_bind: Batched(batched.bind_many),
    tasks.task_finish: Batched(batched.finish_many),
    tasks.task_record_progress: Batched(progress_many, _updated_sessions),
    waiting.task_park: Batched(waiting.park_many),
    waiting.waiting_heads: Batched(heads_many, _no_sessions, last=True),
    waiting.tasks_claim_waiting: Batched(waiting.claim_many, _claimed_sessions, last=True),
    submission.tasks_store: Batched(submission.tasks_store_many, _no_sessions),
}
