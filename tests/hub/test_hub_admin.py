"""The Django admin goes through the services: validated labels, audited actions."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from hivemind_web.hub.models import Node, Task, TaskEvent
from hivemind_web.hub.services import nodes as node_services
from hivemind_web.hub.services import submission

pytestmark = pytest.mark.django_db


def staff(username: str, role: str) -> Client:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def node() -> Node:
    return node_services.node_create(name="n1", labels={"zone": "a"}, capacity=2)[0]


def test_node_labels_are_edited_as_lines_and_validated(node: Node) -> None:
    alice = staff("alice", "admin")
    url = f"/admin/hub/node/{node.pk}/change/"
    bad = alice.post(url, {"capacity": 2, "labels_text": "zone=a\nnot a label"})
    assert bad.status_code == 200 and "is not of the form key=value" in bad.content.decode()
    bad = alice.post(url, {"capacity": 0, "labels_text": "zone=a"})
    assert "capacity must be" in bad.content.decode()
    node.refresh_from_db()
    assert (node.labels, node.capacity) == ({"zone": "a"}, 2)
    ok = alice.post(url, {"capacity": 4, "labels_text": "zone=b\ngpu=true"})
    assert ok.status_code == 302
    node.refresh_from_db()
    assert (node.labels, node.capacity) == ({"zone": "b", "gpu": "true"}, 4)


def test_node_actions_cordon_and_drain(node: Node) -> None:
    alice = staff("alice", "admin")
    alice.post("/admin/hub/node/", {"action": "cordon", "_selected_action": [node.pk]})
    node.refresh_from_db()
    assert node.cordoned
    alice.post("/admin/hub/node/", {"action": "uncordon", "_selected_action": [node.pk]})
    node.refresh_from_db()
    assert not node.cordoned


def test_an_operator_cannot_edit_nodes_in_the_admin(node: Node) -> None:
    olga = staff("olga", "operator")
    olga.post("/admin/hub/node/", {"action": "cordon", "_selected_action": [node.pk]})
    node.refresh_from_db()
    assert not node.cordoned
    assert olga.get(f"/admin/hub/node/{node.pk}/change/").status_code in (200, 403)
    response = olga.post(f"/admin/hub/node/{node.pk}/change/", {"capacity": 9, "labels_text": ""})
    node.refresh_from_db()
    assert node.capacity == 2 and response.status_code in (302, 403)


def test_task_actions_cancel_and_are_audited() -> None:
    olga = staff("olga", "operator")
    task = submission.task_submit(actor=None, agent_id="echo", input="x", start=False)
    olga.post("/admin/hub/task/", {"action": "cancel", "_selected_action": [task.pk]})
    task.refresh_from_db()
    assert task.status == "cancelled"
    assert TaskEvent.objects.filter(task=task, kind="cancelled", actor="olga").exists()
    # A second cancel is refused with a message, and changes nothing.
    response = olga.post(
        "/admin/hub/task/", {"action": "cancel", "_selected_action": [task.pk]}, follow=True
    )
    assert "already cancelled" in response.content.decode()
    assert TaskEvent.objects.filter(task=task, kind="cancelled").count() == 1


def test_tasks_are_searchable_by_session_id_and_agent() -> None:
    olga = staff("olga", "operator")
    task = submission.task_submit(actor=None, agent_id="sleep", input="1", start=False)
    assert (
        str(task.session_id)[:8]
        in olga.get("/admin/hub/task/", {"q": str(task.session_id)}).content.decode()
    )
    assert Task.objects.count() == 1


def test_bad_team_fields_in_the_admin_are_form_errors() -> None:
    alice = staff("alice", "admin")
    response = alice.post(
        "/admin/hub/team/add/", {"name": "bad name!", "on_failure": "retry", "max_retries": 1000}
    )
    page = response.content.decode()
    assert response.status_code == 200 and "team name must be" in page
    assert "max_retries must be between 0 and 100" in page
