"""Task timeouts: a run still going past its ``timeout`` is stopped where it runs and fails
"timed out" (an execution-phase failure: the team policy decides what follows)."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from hivemind_web.hub import intents
from hivemind_web.hub.models import Task
from hivemind_web.hub.services.orchestrator import task_handle_failure
from hivemind_web.hub.services.transitions import RUNNING

ERR_TIMED_OUT = "timed out after {seconds:g}s"
# How many overdue runs one sweep takes.
BATCH = 200


def tasks_time_out() -> list[str]:
    """Fail the runs past their deadline (one transaction each); returns their session ids."""
    now = timezone.now()
    overdue = (
        Task.objects.select_related("team", "node")
        .filter(status=RUNNING, timeout_at__lte=now)
        .order_by("timeout_at")[:BATCH]
    )
    failed = []
    for task in overdue:
        with transaction.atomic():
            # A local run is stopped first, before a retry may start the session again (a
            # node's run is stopped by the failure itself).
            if not task.node_id:
                intents.stop_attempt(str(task.session_id), None)
            error = ERR_TIMED_OUT.format(seconds=task.timeout or 0)
            if task_handle_failure(task=task, error=error, actor="system") is None:
                transaction.set_rollback(True)  # it ended meanwhile: nothing to stop
                continue
            failed.append(str(task.session_id))
    return failed
