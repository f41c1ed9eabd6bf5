"""A task forced to local while it waits for capacity leaves the wait queue: no hub placing
waiting tasks may send its new, local attempt to a node."""

from __future__ import annotations

import pytest
from runtime_support import pending_task, task_row

from hivemind_web.hub.services import tasks as task_services
from hivemind_web.hub.services import waiting

pytestmark = pytest.mark.django_db


def test_a_waiting_task_forced_to_local_leaves_the_wait_queue() -> None:
    sid = pending_task()
    parked = waiting.task_park(session_id=sid, attempt=1, reason="0/0 nodes", max_wait=60)
    assert parked == waiting.PARKED
    assert [spec.session_id for spec, _ in waiting.waiting_heads(limit=10)] == [sid]
    task_services.task_force_fallback(session_id=sid, actor="olga")
    task = task_row(sid)
    assert (task.status, task.attempts, task.force_local) == ("pending", 2, True)
    assert (task.wait_until, task.waiting_reason) == (None, "")
    assert waiting.waiting_heads(limit=10) == []
