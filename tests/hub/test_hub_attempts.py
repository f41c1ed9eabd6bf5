"""Attempts are data (DESIGN §10): each attempt of a task is a TaskAttempt row written by the
transition services, and the API lists them at /api/v1/tasks/{id}/attempts/."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone
from rest_framework.test import APIClient

from hivemind_web.hub.models import TaskAttempt
from hivemind_web.hub.services import nodes as node_services
from hivemind_web.hub.services import submission
from hivemind_web.hub.services import tasks as task_services
from hivemind_web.hub.services import teams as team_services
from hivemind_web.hub.services.api_tokens import api_token_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def bob() -> APIClient:
    """A viewer."""
    user = User.objects.create_user("bob", password="pw-bob")
    user.groups.add(Group.objects.get(name="viewer"))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=user)}")
    return client


def ready_node(name: str) -> None:
    node_services.node_create(name=name, capacity=2)
    node_services.node_connected(name=name, version="1", labels={}, capacity=2, agents=[])


def run_on(sid: str, attempt: int, node: str) -> None:
    assert task_services.task_mark_routed(
        session_id=sid, attempt=attempt, route="golem", reason="requested golem", owner="hub-a"
    )
    assert task_services.task_bind(
        session_id=sid, attempt=attempt, node_name=node, reason="least loaded", score=87.5
    )
    assert task_services.task_mark_running(session_id=sid, attempt=attempt, node_name=node)


def test_a_remote_attempt_records_its_node_placement_times_and_outcome(bob: APIClient) -> None:
    ready_node("n1")
    task = submission.task_submit(actor=None, agent_id="echo", strategy="golem", start=False)
    sid = str(task.session_id)
    run_on(sid, 1, "n1")
    task_services.task_finish(
        session_id=sid, attempt=1, status="succeeded", output="ok", node_name="n1"
    )
    response = bob.get(f"/api/v1/tasks/{sid}/attempts/")
    assert response.status_code == 200
    [attempt] = response.json()["results"]
    assert attempt["number"] == 1 and attempt["route"] == "golem" and attempt["node"] == "n1"
    assert attempt["reason"] == "requested golem" and attempt["status"] == "succeeded"
    assert attempt["placement"] == {"node": "n1", "score": 87.5, "reason": "least loaded"}
    assert attempt["started_at"] and attempt["finished_at"]
    assert bob.get(f"/api/v1/tasks/{sid}/").json()["attempts"] == 1


def test_start_and_end_are_when_the_hub_heard_them_not_when_the_writes_landed() -> None:
    ready_node("n1")
    task = submission.task_submit(
        actor=None, agent_id="echo", strategy="golem", timeout=30, start=False
    )
    sid = str(task.session_id)
    heard_start = timezone.now() - timedelta(seconds=2)
    heard_end = heard_start + timedelta(seconds=1)
    assert task_services.task_mark_routed(
        session_id=sid, attempt=1, route="golem", reason="requested golem", owner="hub-a"
    )
    assert task_services.task_bind(session_id=sid, attempt=1, node_name="n1", reason="r")
    assert task_services.task_mark_running(
        session_id=sid, attempt=1, node_name="n1", at=heard_start
    )
    task.refresh_from_db()
    assert task.started_at == heard_start
    assert task.timeout_at == heard_start + timedelta(seconds=30)  # the clock runs from then
    task_services.task_finish(
        session_id=sid, attempt=1, status="succeeded", node_name="n1", at=heard_end
    )
    task.refresh_from_db()
    attempt = TaskAttempt.objects.get(task=task, number=1)
    assert task.finished_at == attempt.finished_at == heard_end
    assert attempt.started_at == heard_start
    assert task.updated_at > heard_end  # the write itself is later


def test_an_end_carrying_the_last_progress_report_writes_both() -> None:
    ready_node("n1")
    ready_node("n2")
    done, moved = (
        submission.task_submit(actor=None, agent_id="echo", strategy="golem", start=False)
        for _ in range(2)
    )
    for task in (done, moved):
        run_on(str(task.session_id), 1, "n1")
    report = {"pct": 90.0, "message": "almost", "lines": ["one", "two"], "node": "n1"}
    task_services.task_finish(
        session_id=str(done.session_id),
        attempt=1,
        status="succeeded",
        node_name="n1",
        progress=report,
    )
    done.refresh_from_db()
    assert (done.status, done.message, done.log, done.progress) == (
        "succeeded",
        "almost",
        ["one", "two"],
        100.0,
    )
    # A report from a node the task no longer runs on is dropped; the end still counts.
    stale = {**report, "node": "n2"}
    task_services.task_finish(
        session_id=str(moved.session_id), attempt=1, status="failed", node_name="n1", progress=stale
    )
    moved.refresh_from_db()
    assert moved.status == "failed" and moved.log == [] and moved.message != "almost"


def test_a_retry_is_a_second_attempt_on_another_node() -> None:
    ready_node("n1")
    ready_node("n2")
    team_services.team_get_or_create(name="red")
    task = submission.task_submit(
        actor=None, agent_id="echo", strategy="golem", team="red", start=False
    )
    sid = str(task.session_id)
    run_on(sid, 1, "n1")
    task_services.task_finish(
        session_id=sid, attempt=1, status="failed", error="boom", node_name="n1"
    )
    run_on(sid, 2, "n2")
    rows = list(TaskAttempt.objects.filter(task=task).order_by("number"))
    assert [(a.number, a.node, a.status) for a in rows] == [
        (1, "n1", "failed"),
        (2, "n2", "running"),
    ]
    assert rows[0].error == "boom"


def test_a_fallback_is_recorded_on_its_attempt() -> None:
    task = submission.task_submit(actor=None, agent_id="echo", strategy="golem", start=False)
    sid = str(task.session_id)
    task_services.task_mark_routed(session_id=sid, attempt=1, route="golem", reason="golem")
    task_services.task_record_fallback(session_id=sid, attempt=1, reason="0/0 nodes available")
    first = TaskAttempt.objects.get(task=task, number=1)
    assert first.route == "local" and first.fallback_reason == "0/0 nodes available"


def test_forcing_a_remote_task_local_supersedes_its_attempt() -> None:
    ready_node("n1")
    task = submission.task_submit(actor=None, agent_id="echo", strategy="golem", start=False)
    sid = str(task.session_id)
    run_on(sid, 1, "n1")
    moved = task_services.task_force_fallback(session_id=sid, actor=None)
    first = TaskAttempt.objects.get(task=task, number=1)
    assert first.status == "superseded" and first.finished_at is not None
    assert moved.attempts == 2 and moved.node is None


def test_attempts_of_an_unknown_task_are_a_404(bob: APIClient) -> None:
    response = bob.get("/api/v1/tasks/00000000-0000-0000-0000-000000000000/attempts/")
    assert response.status_code == 404


def test_usage_is_kept_on_its_attempt_and_shown_with_the_task(bob: APIClient) -> None:
    ready_node("n1")
    team_services.team_get_or_create(name="blue")
    task = submission.task_submit(
        actor=None, agent_id="echo", strategy="golem", team="blue", start=False
    )
    sid = str(task.session_id)
    spent = {"model": "small", "prompt_tokens": 12, "completion_tokens": 30}
    run_on(sid, 1, "n1")
    # A failed attempt consumed tokens too: they stay on that attempt.
    task_services.task_finish(
        session_id=sid, attempt=1, status="failed", error="boom", node_name="n1", usage=spent
    )
    assert bob.get(f"/api/v1/tasks/{sid}/").json()["usage"] == {}  # attempt 2 has none yet
    run_on(sid, 2, "n1")
    again = {**spent, "prompt_tokens": 13, "first_token_ms": 41}
    task_services.task_finish(
        session_id=sid, attempt=2, status="succeeded", output="ok", node_name="n1", usage=again
    )
    attempts = bob.get(f"/api/v1/tasks/{sid}/attempts/").json()["results"]
    assert [a["usage"] for a in attempts] == [spent, again]
    assert bob.get(f"/api/v1/tasks/{sid}/").json()["usage"] == again
