"""Task timeouts on a real hub runtime: a run still going past its ``timeout`` is stopped and
fails "timed out"; the team policy decides what follows (``retry`` runs it again)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.layers import get_channel_layer
from runtime_support import WAIT, task_row

from hivemind_web.hub.execution import reaper as reaper_module
from hivemind_web.hub.execution.runtime import Runtime, ensure_started, reset_runtime
from hivemind_web.hub.models import Task
from hivemind_web.hub.services import submission
from hivemind_web.hub.services import teams as team_services
from hivemind_web.hub.services.timeouts import tasks_time_out

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


@pytest.fixture
async def runtime(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Runtime]:
    monkeypatch.setattr(reaper_module, "TICK", 3600.0)  # the tests sweep themselves
    reset_runtime()
    layer = get_channel_layer()
    await layer.flush()
    started = await ensure_started()
    yield started
    reset_runtime()
    await layer.flush()


def submit(**fields: Any) -> str:
    fields = {"agent_id": "sleep", "input": "5", "strategy": "local", **fields}
    return str(submission.task_submit(actor=None, **fields).session_id)


async def until(runtime: Runtime, session_id: str, check: Any) -> Task:
    deadline = time.monotonic() + WAIT
    while True:
        task = await runtime.write(task_row, session_id)
        if check(task) or time.monotonic() > deadline:
            return task
        await asyncio.sleep(0.02)


async def test_a_local_run_past_its_timeout_is_stopped_and_fails_timed_out(
    runtime: Runtime,
) -> None:
    sid = await runtime.write(submit, timeout=0.3)
    task = await until(runtime, sid, lambda t: t.status == "running")
    assert task.timeout_at is not None
    assert await runtime.write(tasks_time_out) == []  # not yet
    await asyncio.sleep(0.35)
    assert await runtime.write(tasks_time_out) == [sid]
    task = await until(runtime, sid, lambda t: t.is_terminal)
    assert (task.status, task.error) == ("failed", "timed out after 0.3s")
    # The agent was stopped, not left running in the hub.
    await asyncio.sleep(0.05)
    assert runtime.local.running == 0
    assert await runtime.write(tasks_time_out) == []  # once


async def test_a_retry_team_runs_a_timed_out_task_again(runtime: Runtime) -> None:
    await runtime.write(team_services.team_create, name="again", on_failure="retry", max_retries=1)
    sid = await runtime.write(submit, team="again", timeout=0.3)
    await until(runtime, sid, lambda t: t.status == "running")
    await asyncio.sleep(0.35)
    assert await runtime.write(tasks_time_out) == [sid]
    task = await until(runtime, sid, lambda t: t.attempts == 2 and t.status == "running")
    assert (task.attempts, task.status) == (2, "running")
    await asyncio.sleep(0.35)
    assert await runtime.write(tasks_time_out) == [sid]
    task = await until(runtime, sid, lambda t: t.is_terminal)
    assert (task.status, task.attempts, task.error) == ("failed", 2, "timed out after 0.3s")
    kinds = await runtime.write(
        lambda: list(Task.objects.get(session_id=sid).events.values_list("kind", flat=True))
    )
    assert kinds.count("attempt_failed") == 1 and "retry" in kinds
