"""Operator actions: retry (linked both ways), bulk cancel and retry of the filtered selection,
confirmations before what cannot be undone, and per-agent input checks at submit."""

from __future__ import annotations

import pytest
from dashboard_users import make_user
from django.test import Client
from rest_framework.test import APIClient

from hivemind_web.hub.models import Task, TaskEvent
from hivemind_web.hub.services import retries, submission
from hivemind_web.hub.services.api_tokens import api_token_create
from hivemind_web.hub.services.errors import TransitionError

pytestmark = pytest.mark.django_db


def api_client_for(username: str, role: str | None) -> APIClient:
    client = APIClient()
    token = api_token_create(user=make_user(username, role))
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def stored(agent: str = "echo", status: str = "pending", **fields) -> Task:
    task = submission.task_submit(
        actor=None, agent_id=agent, input="1", strategy="golem", start=False, **fields
    )
    Task.objects.filter(pk=task.pk).update(status=status)
    task.refresh_from_db()
    return task


def test_a_retry_is_a_new_task_with_the_same_fields_linked_both_ways() -> None:
    old = stored(
        "sleep", "failed", team="red", node_selector={"gpu": "true"}, affinity="prefer_spread"
    )
    new = retries.task_retry(session_id=old.session_id, actor=None, start=False)
    assert new.pk != old.pk and new.status == "pending"
    same = ("agent_id", "input", "strategy", "node_selector", "affinity", "team_id")
    assert [getattr(new, f) for f in same] == [getattr(old, f) for f in same]
    assert new.retry_of == old and list(old.retries.all()) == [new]
    assert TaskEvent.objects.filter(task=old, kind="retried").get().data == {
        "retry": str(new.session_id)
    }
    assert TaskEvent.objects.get(task=new, kind="submitted").data["retry_of"] == str(old.session_id)


@pytest.mark.parametrize("status", ["pending", "running", "succeeded"])
def test_only_failed_or_cancelled_tasks_are_retried(status: str) -> None:
    task = stored(status=status)
    with pytest.raises(TransitionError, match="only failed or cancelled"):
        retries.task_retry(session_id=task.session_id, actor=None, start=False)


def test_the_api_retries_and_shows_the_links() -> None:
    old = stored(status="cancelled")
    olga = api_client_for("olga", "operator")
    response = olga.post(f"/api/v1/tasks/{old.session_id}/retry/")
    assert response.status_code == 201 and response.json()["retry_of"] == str(old.session_id)
    detail = olga.get(f"/api/v1/tasks/{old.session_id}/").json()
    assert detail["retries"] == [response.json()["session_id"]]
    again = olga.post(f"/api/v1/tasks/{response.json()['session_id']}/retry/")
    assert again.status_code == 409 and "only failed or cancelled" in again.json()["detail"]
    bob = api_client_for("bob", "viewer")
    assert bob.post(f"/api/v1/tasks/{old.session_id}/retry/").status_code == 403


def test_the_task_page_offers_retry_and_shows_both_links(olga: Client) -> None:
    old = stored(status="failed")
    html = olga.get(f"/tasks/{old.session_id}/").content.decode()
    assert f'action="/tasks/{old.session_id}/retry/"' in html
    answer = olga.post(f"/tasks/{old.session_id}/retry/", HTTP_ACCEPT="application/json").json()
    new = Task.objects.get(retry_of=old)
    assert answer["ok"] and answer["url"] == f"/tasks/{new.session_id}/"
    assert 'data-field="retries"' in olga.get(f"/tasks/{old.session_id}/").content.decode()
    assert 'data-field="retry-of"' in olga.get(answer["url"]).content.decode()


def test_bulk_actions_touch_the_whole_filtered_selection_and_say_how_many(olga: Client) -> None:
    for _ in range(3):
        stored("sleep", "running")
    stored("echo", "running")
    stored("sleep", "succeeded")
    preview = olga.get("/tasks/bulk/preview.json?action=cancel&q=sleep").json()
    assert preview["count"] == 3
    done = olga.post(
        "/tasks/bulk/", {"action": "cancel", "q": "sleep"}, HTTP_ACCEPT="application/json"
    ).json()
    assert done == {"ok": True, "message": "Cancelled 3 tasks.", "done": 3}
    assert Task.objects.filter(status="cancelled").count() == 3
    assert Task.objects.get(agent_id="echo").status == "running"
    retried = olga.post(
        "/tasks/bulk/",
        {"action": "retry", "status": ["cancelled", "failed"]},
        HTTP_ACCEPT="application/json",
    ).json()
    assert retried["message"] == "Retried 3 tasks."
    assert Task.objects.filter(retry_of__isnull=False).count() == 3


def test_a_viewer_may_not_act_in_bulk(bob: Client) -> None:
    assert bob.post("/tasks/bulk/", {"action": "cancel"}).status_code == 403


def test_irreversible_actions_ask_first(olga: Client, alice: Client, node) -> None:
    task = stored("sleep", "running")
    Task.objects.filter(pk=task.pk).update(route="golem", progress=95.0)
    html = olga.get(f"/tasks/{task.session_id}/").content.decode()
    assert 'data-confirm="Cancel this sleep task?' in html
    assert "It restarts from zero on the hub: its progress on the node (95%) is lost." in html
    assert (
        'data-confirm="Drain gpu-1? It takes no new work'
        in alice.get("/nodes/gpu-1/").content.decode()
    )


@pytest.mark.parametrize(
    ("agent", "text", "error"),
    [
        ("sleep", "abc", "sleep agent: input must be a number of seconds"),
        ("sleep", "-1", "from 0 to 3600"),
        ("count", "many", "count agent: input must be 'N' or 'N INTERVAL'"),
    ],
)
def test_an_agent_checks_its_input_at_submit(agent: str, text: str, error: str) -> None:
    response = api_client_for("olga", "operator").post(
        "/api/v1/tasks/", {"agent_id": agent, "input": text}, format="json"
    )
    assert response.status_code == 400 and error in response.json()["input"][0]
    assert not Task.objects.exists()


def test_a_good_input_passes_the_agents_check() -> None:
    response = api_client_for("olga", "operator").post(
        "/api/v1/tasks/", {"agent_id": "sleep", "input": "0.5", "strategy": "local"}, format="json"
    )
    assert response.status_code == 201, response.json()


def test_the_form_shows_the_agents_input_error(olga: Client) -> None:
    response = olga.post(
        "/tasks/new/", {"agent_id": "sleep", "input": "abc", "strategy": "auto", "affinity": "none"}
    )
    assert response.status_code == 400
    assert "input must be a number of seconds" in response.content.decode()
