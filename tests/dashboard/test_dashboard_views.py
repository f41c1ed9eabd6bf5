"""Pages and actions: who sees what, who may do what, and what a forged request gets."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from hivemind_web.hub.models import HubSetting, Node, Task, TaskEvent
from hivemind_web.hub.services import nodes as node_services
from hivemind_web.hub.services import submission, waiting
from hivemind_web.hub.services import tasks as task_services
from hivemind_web.hub.services import teams as team_services

pytestmark = pytest.mark.django_db

SID = "00000000-0000-0000-0000-000000000000"


@pytest.mark.parametrize(
    "path",
    ["/", "/tasks/new/", f"/tasks/{SID}/", "/nodes/gpu-1/", "/teams/red/", "/board/snapshot.json"],
)
def test_pages_send_anonymous_visitors_to_the_login_page(client: Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={path}"


def test_the_login_page_uses_djangos_standard_fields(client: Client) -> None:
    html = client.get("/accounts/login/").content.decode()
    assert 'name="username"' in html and 'name="password"' in html


def test_someone_without_a_role_is_refused_the_board(charlie: Client) -> None:
    assert charlie.get("/").status_code == 403
    assert charlie.get("/board/snapshot.json").status_code == 403


def test_a_viewer_sees_the_board_but_no_way_to_act(bob: Client) -> None:
    html = bob.get("/").content.decode()
    assert 'data-can-control=""' in html and 'data-can-switch=""' in html
    assert "New task" not in html


def test_an_admin_gets_the_action_flags(alice: Client) -> None:
    html = alice.get("/").content.decode()
    assert 'data-can-control="1"' in html and 'data-can-switch="1"' in html
    assert "New task" in html


def test_a_viewer_sees_a_task_without_its_buttons(bob: Client, task: Task) -> None:
    html = bob.get(f"/tasks/{task.session_id}/").content.decode()
    assert f'data-session-id="{task.session_id}"' in html
    assert 'role="progressbar"' in html
    assert ">Cancel<" not in html and ">Force fallback<" not in html


def test_an_operator_sees_cancel_and_force_fallback(olga: Client, task: Task) -> None:
    html = olga.get(f"/tasks/{task.session_id}/").content.decode()
    assert ">Cancel<" in html and ">Force fallback<" in html


def test_a_finished_task_offers_no_buttons(olga: Client, task: Task) -> None:
    task_services.task_cancel(session_id=task.session_id, actor="test")
    html = olga.get(f"/tasks/{task.session_id}/live/").content.decode()
    assert ">Cancel<" not in html and "cancelled" in html


def test_the_task_page_shows_the_placement_record_as_a_table(
    bob: Client, task: Task, node: Node
) -> None:
    record = {
        "evaluated": 3,
        "feasible": 2,
        "rejected": {"at capacity": 1},
        "candidates": [
            {
                "node": node.name,
                "total": 0.9,
                "scores": {"least_loaded": 0.8, "prefer_labels": 0.1},
            },
            {"node": "other", "total": 0.5, "scores": {"least_loaded": 0.5}},
        ],
        "chosen": node.name,
        "summary": f"best of 2 feasible nodes: {node.name}",
    }
    node_services.node_connected(
        name=node.name, version="1", labels=node.labels, capacity=2, agents=["echo"]
    )
    task_services.task_mark_routed(
        session_id=str(task.session_id), attempt=1, route="golem", reason="requested golem"
    )
    bound = task_services.task_bind(
        session_id=str(task.session_id), attempt=1, node_name=node.name, record=record
    )
    assert bound is True, bound
    html = bob.get(f"/tasks/{task.session_id}/live/").content.decode()
    assert "2 of 3 nodes feasible; ruled out: 1 at capacity." in html
    assert '<table class="compare candidates">' in html
    assert "least_loaded 0.8" in html and "prefer_labels 0.1" in html
    assert f"best of 2 feasible nodes: {node.name}" in html
    api = bob.get(f"/api/v1/tasks/{task.session_id}/").json()["placement"]
    assert api["feasible"] == 2 and api["candidates"][0]["scores"]["least_loaded"] == 0.8


def test_a_waiting_task_shows_why_it_waits(bob: Client, task: Task) -> None:
    task_services.task_mark_routed(
        session_id=str(task.session_id), attempt=1, route="golem", reason="requested golem"
    )
    waiting.task_park(
        session_id=str(task.session_id),
        attempt=1,
        reason="0/3 nodes available: 3 at capacity",
        max_wait=30,
    )
    html = bob.get(f"/tasks/{task.session_id}/live/").content.decode()
    assert "Waiting for a node: 0/3 nodes available: 3 at capacity" in html
    assert 'data-outcome="waiting"' in html and "then local)" in html
    assert 'data-kind="waiting"' in html


def test_the_timeline_names_who_did_what(olga: Client, task: Task) -> None:
    olga.post(f"/tasks/{task.session_id}/fallback/")
    html = olga.get(f"/tasks/{task.session_id}/live/").content.decode()
    assert 'data-kind="force_fallback"' in html and "by olga" in html
    assert "forced to local by olga" in html


def test_unknown_objects_are_404(bob: Client) -> None:
    assert bob.get(f"/tasks/{SID}/").status_code == 404
    assert bob.get("/nodes/nowhere/").status_code == 404
    assert bob.get("/teams/nobody/").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/tasks/{sid}/cancel/",
        "/tasks/{sid}/fallback/",
        "/nodes/gpu-1/cordon/",
        "/nodes/gpu-1/uncordon/",
        "/nodes/gpu-1/drain/",
        "/fallback-mode/",
    ],
)
def test_a_viewers_forged_post_is_refused_and_changes_nothing(
    bob: Client, task: Task, node: Node, path: str
) -> None:
    before = (TaskEvent.objects.count(), Node.objects.get().cordoned, HubSetting.objects.count())
    response = bob.post(path.format(sid=task.session_id), {"enabled": "1"})
    assert response.status_code == 403
    after = (TaskEvent.objects.count(), Node.objects.get().cordoned, HubSetting.objects.count())
    assert after == before
    assert Task.objects.get().status == "pending"


def test_an_operator_may_not_manage_nodes(olga: Client, node: Node) -> None:
    assert olga.post("/nodes/gpu-1/cordon/").status_code == 403
    assert olga.post("/fallback-mode/", {"enabled": "1"}).status_code == 403
    assert not Node.objects.get().cordoned


def test_actions_need_a_post(alice: Client, node: Node) -> None:
    assert alice.get("/nodes/gpu-1/cordon/").status_code == 405


def test_an_operator_cancels_from_a_script_and_gets_json(olga: Client, task: Task) -> None:
    response = olga.post(f"/tasks/{task.session_id}/cancel/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200 and response.json()["ok"] is True
    assert Task.objects.get().status == "cancelled"
    again = olga.post(f"/tasks/{task.session_id}/cancel/", HTTP_ACCEPT="application/json")
    assert again.status_code == 409
    assert "already cancelled" in again.json()["message"]


def test_a_plain_form_post_redirects_back_with_a_message(olga: Client, task: Task) -> None:
    response = olga.post(f"/tasks/{task.session_id}/cancel/", {"next": "/?status=running"})
    assert response.status_code == 302 and response["Location"] == "/?status=running"
    evil = olga.post(f"/tasks/{task.session_id}/cancel/", {"next": "https://evil.example/"})
    assert evil["Location"] == f"/tasks/{task.session_id}/"


def test_an_admin_cordons_uncordons_and_drains(alice: Client, node: Node) -> None:
    assert alice.post("/nodes/gpu-1/cordon/").status_code == 302
    assert Node.objects.get().cordoned
    html = alice.get("/nodes/gpu-1/").content.decode()
    assert ">Uncordon<" in html and ">Cordon<" not in html and 'data-node="gpu-1"' in html
    alice.post("/nodes/gpu-1/uncordon/")
    assert not Node.objects.get().cordoned
    alice.post("/nodes/gpu-1/drain/", HTTP_ACCEPT="application/json")
    # Nothing runs there, so the drain settles at once: drained means cordoned.
    assert Node.objects.get().cordoned
    # The node page shows who did what.
    html = alice.get("/nodes/gpu-1/").content.decode()
    for kind in ("cordoned", "uncordoned", "drain"):
        assert f'data-kind="{kind}"' in html
    assert "by alice" in html


def test_a_viewer_sees_a_node_without_its_buttons(bob: Client, node: Node) -> None:
    html = bob.get("/nodes/gpu-1/").content.decode()
    assert 'data-node="gpu-1"' in html and "not_ready" in html
    assert ">Cordon<" not in html and ">Drain<" not in html


def test_an_admin_switches_fallback_mode(alice: Client) -> None:
    response = alice.post("/fallback-mode/", {"enabled": "1"}, HTTP_ACCEPT="application/json")
    assert response.json() == {"ok": True, "message": "Fallback mode is on.", "enabled": True}
    assert HubSetting.objects.get().fallback_mode
    assert HubSetting.objects.get().changed_by == "alice"


def test_the_snapshot_endpoint_pages_and_filters(bob: Client, node: Node) -> None:
    for _ in range(3):
        submission.task_submit(actor=None, agent_id="echo", team="red", start=False)
    submission.task_submit(actor=None, agent_id="sleep", input="1", start=False)
    body = bob.get("/board/snapshot.json?tasks=1&team=red").json()
    assert body["tasks"]["count"] == 3
    assert {t["team"] for t in body["tasks"]["results"]} == {"red"}
    assert "input" not in body["tasks"]["results"][0]
    assert body["summary"]["tasks_queued"] == 4
    assert [n["name"] for n in body["nodes"]] == ["gpu-1"]
    assert body["teams"] == ["red"]
    assert bob.get("/board/snapshot.json?tasks=1&q=sleep").json()["tasks"]["count"] == 1
    bad = bob.get("/board/snapshot.json?tasks=1&status=running,bogus").json()
    assert "bogus" in bad["errors"]["status"] and bad["tasks"]["filters"]["status"] == ["running"]


def test_without_tasks_asked_the_snapshot_has_no_page(bob: Client) -> None:
    body = json.loads(bob.get("/board/snapshot.json").content)
    assert "tasks" not in body and body["type"] == "snapshot"


def test_the_task_page_shows_what_the_attempt_consumed(bob: Client) -> None:
    task = submission.task_submit(actor=None, agent_id="echo", strategy="local", start=False)
    sid = str(task.session_id)
    assert task_services.task_mark_routed(session_id=sid, attempt=1, route="local", reason="")
    assert task_services.task_mark_running(session_id=sid, attempt=1)
    usage = {"model": "tiny", "prompt_tokens": 12, "completion_tokens": 30, "first_token_ms": 41}
    task_services.task_finish(session_id=sid, attempt=1, status="succeeded", usage=usage)
    html = bob.get(f"/tasks/{sid}/").content.decode()
    assert "12 prompt + 30 completion tokens" in html and "first token after 41 ms" in html


def test_the_team_page_says_how_long_its_tasks_may_wait(bob: Client) -> None:
    team_services.team_create(name="patient", max_wait=90)
    team_services.team_create(name="hasty", max_wait=0)
    assert "wait for a node up to 90 s" in bob.get("/teams/patient/").content.decode()
    assert "not at all (they fall back at once)" in bob.get("/teams/hasty/").content.decode()
