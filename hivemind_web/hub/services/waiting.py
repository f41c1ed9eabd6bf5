"""The wait queue (DESIGN §11): pending tasks no node can take yet, kept in the database.

A waiting task is ``pending`` with a deadline (``wait_until``) and a ``waiting_reason``.
Any hub process may take it from the queue: the claim is a guard under the row lock (still
pending, same attempt, still waiting) followed by the usual conditional bind in the same
transaction, so several hubs share one queue and a task is placed once. Past its deadline a
task is claimed for the local fallback instead, once.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from hivemind_web.hub.intents import AttemptSpec
from hivemind_web.hub.models import Task, Team
from hivemind_web.hub.services import batched, events, statements
from hivemind_web.hub.services.attempts import attempts_set
from hivemind_web.hub.services.rows import set_fields
from hivemind_web.hub.services.transitions import PENDING, clean_text

# What task_park did.
PARKED = "parked"
EXPIRED = "expired"  # its time to wait is up: fall back
GONE = "gone"  # no longer this pending attempt (cancelled, moved on)
NOT_WAITING = "not_waiting"  # a claim lost: another hub took it, or it left the queue
WAITED = "waited {seconds:g}s for a node: {reason}"
# How many expired tasks one claim takes.
EXPIRE_BATCH = 200


@transaction.atomic
def task_park(
    *,
    session_id: str,
    attempt: int,
    reason: str,
    max_wait: float,
    placement: dict[str, Any] | None = None,
) -> str:
    """Put the attempt in the wait queue (its deadline set the first time), or say why
    not: EXPIRED (fall back now) or GONE."""
    call = {"session_id": session_id, "attempt": attempt, "reason": reason}
    return park_many([{**call, "max_wait": max_wait, "placement": placement}])[0]


def park_many(calls: list[dict[str, Any]]) -> list[str]:
    """``task_park`` for many attempts at once (a burst no node can take): one locked read,
    one write of the tasks, one of their attempt records, one insert of events."""
    now = timezone.now()
    rows = batched.locked(c["session_id"] for c in calls)
    results, parked, placements, first, again = [], [], {}, [], []
    for call in calls:
        task = rows.get(call["session_id"])
        if task is None or task.attempts != call["attempt"] or task.status != PENDING:
            results.append(GONE)
            continue
        deadline = task.wait_until or now + timedelta(seconds=call["max_wait"])
        if deadline <= now:
            results.append(EXPIRED)
            continue
        was_waiting = task.wait_until is not None
        # Nobody owns a waiting task: any hub may place it, a dead hub leaves nothing behind.
        task.wait_until, task.owner, task.updated_at = deadline, "", now
        task.waiting_reason = clean_text(call["reason"])[:2000]
        parked.append(task)
        placements[(task.pk, task.attempts)] = call.get("placement") or {}
        if was_waiting:
            again.append(task)
        else:
            data = {"reason": task.waiting_reason, "until": deadline.isoformat()}
            first.append((task, "waiting", None, data))
        results.append(PARKED)
    if parked:
        set_fields(parked, ["wait_until", "waiting_reason", "owner", "updated_at"])
        attempts_set(
            ("status", "placement"),
            [("waiting", record, pk, number) for (pk, number), record in placements.items()],
        )
    events.task_events(first)
    for task in again:
        events.publish_task(task)
    return results


# The queue's order (the partial index ``task_wait_queue``): highest priority, then oldest.
_QUEUE = (
    f"{statements.column(Task, 'status')} = %s AND {statements.column(Task, 'wait_until')} "
    f"IS NOT NULL ORDER BY {statements.column(Task, 'priority')} DESC, "
    f"{statements.column(Task, 'created_at')}, {statements.column(Task, 'id')} LIMIT %s OFFSET %s"
)


def waiting_heads(*, limit: int, offset: int = 0) -> list[tuple[AttemptSpec, Any]]:
    """The head of the queue, highest priority first, then oldest: (spec without its input,
    created_at). Inputs are read only for the tasks a claim wins. Read on every fill, as
    plain statements (DESIGN §10)."""
    rows = statements.select(
        Task, batched.TASK_COLUMNS, _QUEUE, [PENDING, limit, offset], order_by_pk=False
    )
    batched.attach(rows, "team", Team, batched.TEAM_COLUMNS)
    return [(AttemptSpec.of(task, with_input=False), task.created_at) for task in rows]


def _specs(session_ids: list[str]) -> dict[str, AttemptSpec]:
    """The specs of these tasks' current attempts, inputs included."""
    if not session_ids:
        return {}
    where, params = statements.where_in(Task, "session_id", session_ids)
    rows = statements.select(Task, (*batched.TASK_COLUMNS, "input"), where, params)
    batched.attach(rows, "team", Team, batched.TEAM_COLUMNS)
    return {str(task.session_id): AttemptSpec.of(task) for task in rows}


def waiting_count() -> int:
    return Task.objects.filter(status=PENDING, wait_until__isnull=False).count()


@transaction.atomic
def tasks_claim_waiting(*, claims: list[dict[str, Any]], owner: str) -> list[AttemptSpec | str]:
    """Take waiting tasks out of the queue and bind each to the node decided for it
    (``claims``: session_id, attempt, node_name, reason, score, record). One result per
    claim: the attempt's spec when bound, else why not (NOT_WAITING, BIND_NODE_FULL)."""
    return claim_many([{"claims": claims, "owner": owner}])[0]


def claim_many(calls: list[dict[str, Any]]) -> list[list[AttemptSpec | str]]:
    """``tasks_claim_waiting`` for several fills at once (hub processes fill one at a time,
    so two calls of one batch never claim the same task): one pass per owner."""
    results: list[list[AttemptSpec | str]] = [[] for _ in calls]
    by_owner: dict[str, list[int]] = {}
    for i, call in enumerate(calls):
        by_owner.setdefault(call["owner"], []).append(i)
    for owner, indexes in by_owner.items():
        outcomes = _claim([c for i in indexes for c in calls[i]["claims"]], owner)
        for i in indexes:
            taken = len(calls[i]["claims"])
            results[i], outcomes = outcomes[:taken], outcomes[taken:]
    return results


def _claim(claims: list[dict[str, Any]], owner: str) -> list[AttemptSpec | str]:
    rows = batched.locked(c["session_id"] for c in claims)
    results: list[AttemptSpec | str] = [NOT_WAITING] * len(claims)
    held: dict[str, tuple[Any, str]] = {}
    taken = []
    for call in claims:
        task = rows.get(call["session_id"])
        if (
            task is not None
            and task.attempts == call["attempt"]
            and task.status == PENDING
            and task.wait_until is not None
        ):
            held[call["session_id"]] = (task.wait_until, task.waiting_reason)
            task.wait_until, task.waiting_reason, task.owner = None, "", owner
            taken.append(task)
    if not held:
        return results
    # Out of the queue first, so the bind's board event shows the task as placed.
    set_fields(taken, ["wait_until", "waiting_reason", "owner"])
    calls = [c for c in claims if c["session_id"] in held]
    outcomes = dict(zip((c["session_id"] for c in calls), batched.bind_many(calls), strict=True))
    specs = _specs([sid for sid, outcome in outcomes.items() if outcome is True])
    for sid, outcome in outcomes.items():
        if outcome is not True:  # back in the queue as it was
            until, reason = held[sid]
            Task.objects.filter(session_id=sid, status=PENDING).update(
                wait_until=until, waiting_reason=reason, owner=""
            )
    for i, call in enumerate(claims):
        sid = call["session_id"]
        if sid in specs:
            results[i] = specs[sid]
        elif sid in outcomes:
            results[i] = outcomes[sid]  # type: ignore[assignment]
    return results


@transaction.atomic
def tasks_claim_expired(*, owner: str) -> list[AttemptSpec]:
    """Take the tasks whose time to wait is up out of the queue, for the local fallback:
    their specs carry the reason."""
    now = timezone.now()
    rows = list(
        Task.objects.select_related("team")
        .select_for_update(of=("self",))
        .filter(status=PENDING, wait_until__lte=now)
        .order_by("pk")[:EXPIRE_BATCH]
    )
    specs = []
    for task in rows:
        spec = AttemptSpec.of(task)
        reason = WAITED.format(seconds=spec.max_wait, reason=task.waiting_reason)
        specs.append(dataclasses.replace(spec, fallback_reason=reason))
    if rows:
        Task.objects.filter(pk__in=[t.pk for t in rows]).update(
            wait_until=None, waiting_reason="", owner=owner, updated_at=now
        )
    return specs
