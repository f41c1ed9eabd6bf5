"""The REST API: shapes, validation (400 per field, 409 on illegal transitions), permissions.

These run against the test database without a server: a submitted task is stored but not
started (its start is an on-commit hook that the test transaction never fires). End-to-end
execution is covered by tests/reliability with a real daphne hub.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from rest_framework.test import APIClient

from hivemind_web.hub.models import Node, Task, TaskEvent, Team
from hivemind_web.hub.services import nodes as node_services
from hivemind_web.hub.services import submission
from hivemind_web.hub.services import tasks as task_services
from hivemind_web.hub.services.api_tokens import api_token_create

pytestmark = pytest.mark.django_db


def client_for(username: str, role: str | None) -> APIClient:
    user = User.objects.create_user(username, password="pw-" + username)
    if role:
        user.groups.add(Group.objects.get(name=role))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=user)}")
    return client


@pytest.fixture
def alice() -> APIClient:
    """The admin."""
    return client_for("alice", "admin")


@pytest.fixture
def olga() -> APIClient:
    """An operator."""
    return client_for("olga", "operator")


@pytest.fixture
def bob() -> APIClient:
    """A viewer."""
    return client_for("bob", "viewer")


@pytest.fixture
def charlie() -> APIClient:
    """Authenticated, but in no group."""
    return client_for("charlie", None)


@pytest.fixture
def node() -> Node:
    created, _ = node_services.node_create(name="gpu-1", labels={"gpu": "true"}, capacity=2)
    return created


def db_state() -> tuple[int, int, int, int]:
    return (
        Task.objects.count(),
        TaskEvent.objects.count(),
        Team.objects.count(),
        Node.objects.count(),
    )


def test_healthz_needs_no_auth(client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_openapi_schema_and_docs_are_served(alice: APIClient) -> None:
    assert alice.get("/api/schema/").status_code == 200
    assert alice.get("/api/docs/").status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/tasks/"),
        ("post", "/api/v1/tasks/"),
        ("get", "/api/v1/nodes/"),
        ("get", "/api/v1/nodes/gpu-1/"),
        ("post", "/api/v1/nodes/gpu-1/cordon/"),
        ("get", "/api/v1/nodes/gpu-1/tasks/"),
        ("get", "/api/v1/teams/"),
        ("get", "/api/v1/fallback-mode/"),
        ("put", "/api/v1/fallback-mode/"),
    ],
)
def test_anonymous_calls_get_no_data(node: Node, method: str, path: str) -> None:
    response = getattr(APIClient(), method)(path, {}, format="json")
    assert response.status_code in (401, 403)
    assert set(response.json()) == {"detail"}


def test_an_operator_submits_a_task_and_reads_it_back(olga: APIClient) -> None:
    response = olga.post(
        "/api/v1/tasks/",
        {"agent_id": "echo", "input": "hi", "strategy": "local", "team": "blue"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    for field in [
        "session_id",
        "agent_id",
        "input",
        "status",
        "strategy",
        "route",
        "node",
        "team",
        "node_selector",
        "affinity",
        "progress",
        "message",
        "output",
        "error",
        "fallback_reason",
        "attempts",
        "created_at",
        "started_at",
        "finished_at",
    ]:
        assert field in body
    assert (body["status"], body["team"], body["attempts"]) == ("pending", "blue", 1)
    # A team named on submit is created with the default policy.
    assert olga.get("/api/v1/teams/blue/").json()["on_failure"] == "retry"
    detail = olga.get(f"/api/v1/tasks/{body['session_id']}/").json()
    assert detail["input"] == "hi"
    events = olga.get(f"/api/v1/tasks/{body['session_id']}/events/").json()["results"]
    assert [(e["kind"], e["actor"]) for e in events] == [("submitted", "olga")]


TOO_BIG = "x" * (256 * 1024 + 1)


@pytest.mark.parametrize(
    ("payload", "field", "fragment"),
    [
        ({"agent_id": "echo", "strategy": "sideways"}, "strategy", "unknown strategy"),
        ({"agent_id": "echo", "affinity": "clingy"}, "affinity", "unknown affinity"),
        ({"agent_id": "no-such-agent"}, "agent_id", "unknown agent"),
        ({"agent_id": ""}, "agent_id", ""),
        ({"agent_id": "echo", "node_selector": {"bad key!": "x"}}, "node_selector", "label key"),
        ({"agent_id": "echo", "node_selector": {"gpu": "not ok!"}}, "node_selector", "value"),
        ({"agent_id": "echo", "node_selector": "gpu=true"}, "node_selector", ""),
        ({"agent_id": "echo", "affinity": "require_spread"}, "affinity", "requires a team"),
        ({"agent_id": "echo", "affinity": "require_colocate"}, "affinity", "requires a team"),
        ({"agent_id": "echo", "input": TOO_BIG}, "input", "limit is 262144 bytes"),
        ({"agent_id": "echo", "team": "bad team!"}, "team", "team name"),
        ({"agent_id": "echo", "input": "nul\x00byte"}, "input", "ull characters"),
        ({"agent_id": "echo", "node": "Not_A_Node"}, "node", "DNS label"),
        ({"agent_id": "echo", "prefer_labels": {"zone": "bad value!"}}, "prefer_labels", "value"),
        ({"agent_id": "echo", "prefer_labels": ["zone=eu"]}, "prefer_labels", ""),
        ({"agent_id": "echo", "capabilities": ["gpu inference"]}, "capabilities", "'-', '_'"),
        ({"agent_id": "echo", "capabilities": "browser"}, "capabilities", ""),
        (
            {"agent_id": "echo", "capabilities": [f"c{i}" for i in range(65)]},
            "capabilities",
            "at most 64",
        ),
        (
            {"agent_id": "echo", "resources": {"min_free_memory_mb": -1}},
            "resources",
            "min_free_memory_mb: must be a whole number",
        ),
        (
            {"agent_id": "echo", "resources": {"max_cpu_percent": 150}},
            "resources",
            "max_cpu_percent: must be a number from 0 to 100",
        ),
        ({"agent_id": "echo", "resources": {"gpus": 1}}, "resources", "unknown keys gpus"),
        ({"agent_id": "echo", "model": "two words"}, "model", "spaces"),
        ({"agent_id": "echo", "priority": 10**7}, "priority", "whole number"),
        ({"agent_id": "echo", "priority": "high"}, "priority", "integer"),
        ({"agent_id": "echo", "max_wait": -1}, "max_wait", "from 0 up to 86400"),
        ({"agent_id": "echo", "max_wait": 10**6}, "max_wait", "from 0 up to 86400"),
        ({"agent_id": "echo", "timeout": 0}, "timeout", "above 0"),
        ({"agent_id": "echo", "timeout": "soon"}, "timeout", "number"),
    ],
)
def test_every_bad_field_gets_a_400_naming_it_and_stores_nothing(
    olga: APIClient, payload: dict, field: str, fragment: str
) -> None:
    before = db_state()
    response = olga.post("/api/v1/tasks/", payload, format="json")
    assert response.status_code == 400
    body = response.json()
    assert field in body, body
    assert fragment in " ".join(body[field])
    assert db_state() == before


def test_placement_fields_are_stored_and_shown(olga: APIClient) -> None:
    payload = {
        "agent_id": "echo",
        "strategy": "golem",
        "node": "gpu-1",
        "prefer_labels": {"zone": "eu"},
        "capabilities": ["browser", "gpu_inference"],
        "resources": {"min_free_memory_mb": 512, "max_cpu_percent": 80},
        "model": "llama3:8b",
        "priority": 10,
        "max_wait": 60,
        "timeout": 5,
    }
    response = olga.post("/api/v1/tasks/", payload, format="json")
    assert response.status_code == 201, response.json()
    body = olga.get(f"/api/v1/tasks/{response.json()['session_id']}/").json()
    assert body["pinned_node"] == "gpu-1" and body["node"] is None
    assert body["prefer_labels"] == {"zone": "eu"}
    assert body["capabilities"] == ["browser", "gpu_inference"]
    assert body["resources"] == {"min_free_memory_mb": 512, "max_cpu_percent": 80.0}
    assert (body["model"], body["priority"], body["max_wait"], body["timeout"]) == (
        "llama3:8b",
        10,
        60.0,
        5.0,
    )
    assert (body["waiting_reason"], body["wait_until"], body["placement"]) == ("", None, {})


def test_a_team_keeps_a_default_max_wait(alice: APIClient) -> None:
    created = alice.post("/api/v1/teams/", {"name": "slow", "max_wait": 120}, format="json")
    assert created.status_code == 201 and created.json()["max_wait"] == 120.0
    bad = alice.patch("/api/v1/teams/slow/", {"max_wait": -5}, format="json")
    assert bad.status_code == 400 and "max_wait" in bad.json()
    back = alice.patch("/api/v1/teams/slow/", {"max_wait": None}, format="json")
    assert back.status_code == 200 and back.json()["max_wait"] is None


def test_several_bad_fields_are_reported_together(olga: APIClient) -> None:
    response = olga.post(
        "/api/v1/tasks/",
        {"agent_id": "nope", "strategy": "x", "affinity": "require_spread"},
        format="json",
    )
    assert response.status_code == 400
    assert {"agent_id", "strategy", "affinity"} <= set(response.json())


def test_cancelling_a_finished_task_is_a_conflict(olga: APIClient) -> None:
    task = submission.task_submit(actor=None, agent_id="echo", input="x", start=False)
    task_services.task_cancel(session_id=task.session_id, actor="test")
    before = db_state()
    response = olga.post(f"/api/v1/tasks/{task.session_id}/cancel/")
    assert response.status_code == 409
    assert "already cancelled" in response.json()["detail"]
    assert olga.post(f"/api/v1/tasks/{task.session_id}/fallback/").status_code == 409
    assert db_state() == before


def test_cancel_and_force_fallback_are_audited_with_their_actor(olga: APIClient) -> None:
    task = submission.task_submit(actor=None, agent_id="echo", input="x", start=False)
    response = olga.post(f"/api/v1/tasks/{task.session_id}/fallback/")
    assert response.status_code == 200
    assert response.json()["route"] == "local"
    assert response.json()["fallback_reason"] == "forced to local by olga"
    assert olga.post(f"/api/v1/tasks/{task.session_id}/cancel/").json()["status"] == "cancelled"
    kinds = [(e.kind, e.actor) for e in TaskEvent.objects.filter(task=task)]
    assert ("force_fallback", "olga") in kinds and ("cancelled", "olga") in kinds


def test_unknown_task_is_a_404(bob: APIClient) -> None:
    assert bob.get("/api/v1/tasks/00000000-0000-0000-0000-000000000000/").status_code == 404
    assert bob.get("/api/v1/tasks/not-a-uuid/").status_code == 404


def test_task_list_filters_by_several_statuses_team_and_route(bob: APIClient) -> None:
    a = submission.task_submit(actor=None, agent_id="echo", team="red", start=False)
    b = submission.task_submit(actor=None, agent_id="echo", team="blue", start=False)
    task_services.task_cancel(session_id=b.session_id, actor="test")
    listed = bob.get("/api/v1/tasks/?status=pending,cancelled").json()
    assert listed["count"] == 2
    assert bob.get("/api/v1/tasks/?status=cancelled").json()["results"][0]["session_id"] == str(
        b.session_id
    )
    assert [t["session_id"] for t in bob.get("/api/v1/tasks/?team=red").json()["results"]] == [
        str(a.session_id)
    ]
    bad = bob.get("/api/v1/tasks/?status=running,bogus")
    assert bad.status_code == 400 and "bogus" in bad.json()["status"][0]


def test_a_viewer_reads_but_cannot_act(bob: APIClient, node: Node) -> None:
    assert bob.get("/api/v1/tasks/").status_code == 200
    assert bob.get("/api/v1/nodes/").json()["results"][0]["name"] == "gpu-1"
    before = db_state()
    assert bob.post("/api/v1/tasks/", {"agent_id": "echo"}, format="json").status_code == 403
    assert bob.post("/api/v1/nodes/gpu-1/cordon/").status_code == 403
    assert bob.put("/api/v1/fallback-mode/", {"enabled": True}, format="json").status_code == 403
    assert db_state() == before


def test_someone_without_a_role_sees_nothing(charlie: APIClient, node: Node) -> None:
    assert charlie.get("/api/v1/tasks/").status_code == 403
    assert charlie.get("/api/v1/nodes/gpu-1/").status_code == 403


def test_an_operator_cannot_manage_nodes_but_an_admin_can(
    olga: APIClient, alice: APIClient, node: Node
) -> None:
    assert olga.post("/api/v1/nodes/gpu-1/cordon/").status_code == 403
    assert alice.post("/api/v1/nodes/gpu-1/cordon/").json()["cordoned"] is True
    assert alice.post("/api/v1/nodes/gpu-1/uncordon/").json()["cordoned"] is False
    drained = alice.post("/api/v1/nodes/gpu-1/drain/").json()
    # No task runs there, so the drain completes at once and leaves the node cordoned.
    assert (drained["draining"] or drained["cordoned"]) is True


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"capacity": 0}, "capacity"),
        ({"capacity": 1025}, "capacity"),
        ({"labels": {"bad key!": "x"}}, "labels"),
        ({"labels": {"zone": "a b"}}, "labels"),
    ],
)
def test_bad_node_edits_get_a_400_and_change_nothing(
    alice: APIClient, node: Node, payload: dict, field: str
) -> None:
    response = alice.patch("/api/v1/nodes/gpu-1/", payload, format="json")
    assert response.status_code == 400 and field in response.json()
    node.refresh_from_db()
    assert (node.capacity, node.labels) == (2, {"gpu": "true"})


def test_an_admin_edits_labels_and_capacity(alice: APIClient, node: Node) -> None:
    response = alice.patch(
        "/api/v1/nodes/gpu-1/", {"labels": {"gpu": "false"}, "capacity": 8}, format="json"
    )
    assert response.status_code == 200
    assert (response.json()["labels"], response.json()["capacity"]) == ({"gpu": "false"}, 8)


def test_teams_are_created_validated_and_edited(alice: APIClient) -> None:
    created = alice.post(
        "/api/v1/teams/", {"name": "red", "on_failure": "fail", "max_retries": 0}, format="json"
    )
    assert created.status_code == 201
    dup = alice.post("/api/v1/teams/", {"name": "red"}, format="json")
    assert dup.status_code == 400 and "already exists" in dup.json()["name"][0]
    bad = alice.patch("/api/v1/teams/red/", {"on_failure": "panic"}, format="json")
    assert bad.status_code == 400 and "on_failure" in bad.json()
    ok = alice.patch("/api/v1/teams/red/", {"on_failure": "fallback_local"}, format="json")
    assert ok.json()["on_failure"] == "fallback_local"
    assert alice.get("/api/v1/teams/red/nodes/").json() == {
        "team": "red",
        "nodes": [],
        "counts": {},
    }


def test_the_fallback_mode_switch_is_recorded(alice: APIClient, bob: APIClient) -> None:
    assert bob.get("/api/v1/fallback-mode/").json()["enabled"] is False
    switched = alice.put("/api/v1/fallback-mode/", {"enabled": True}, format="json").json()
    assert (switched["enabled"], switched["changed_by"]) == (True, "alice")
    assert (
        alice.put("/api/v1/fallback-mode/", {"enabled": "maybe"}, format="json").status_code == 400
    )


def test_registration_needs_the_join_token(settings) -> None:
    settings.HIVEMIND = {**settings.HIVEMIND, "JOIN_TOKEN": "sesame"}
    anon = APIClient()
    body = {"join_token": "wrong", "name": "n1", "labels": {"zone": "a"}, "capacity": 2}
    assert anon.post("/api/v1/nodes/register/", body, format="json").status_code == 403
    assert not Node.objects.exists()
    bad = anon.post(
        "/api/v1/nodes/register/", {**body, "join_token": "sesame", "capacity": 0}, format="json"
    )
    assert bad.status_code == 400 and "capacity" in bad.json()
    ok = anon.post("/api/v1/nodes/register/", {**body, "join_token": "sesame"}, format="json")
    assert ok.status_code == 201 and ok.json()["name"] == "n1"
    node = Node.objects.get(name="n1")
    assert node.token_hash and ok.json()["token"] not in node.token_hash
    assert node_services.node_authenticate(ok.json()["token"]) == node


def test_lists_are_paginated_and_the_page_size_is_bounded(bob: APIClient) -> None:
    for _ in range(3):
        submission.task_submit(actor=None, agent_id="echo", start=False)
    page = bob.get("/api/v1/tasks/?page_size=2").json()
    assert (page["count"], len(page["results"]), page["next"] is not None) == (3, 2, True)
    assert len(bob.get("/api/v1/tasks/?page_size=100000").json()["results"]) == 3


def test_only_admins_create_or_change_team_policies(olga: APIClient) -> None:
    assert olga.post("/api/v1/teams/", {"name": "mine"}, format="json").status_code == 403
    submission.task_submit(actor=None, agent_id="echo", team="mine", start=False)
    assert olga.patch("/api/v1/teams/mine/", {"max_retries": 9}, format="json").status_code == 403
    assert olga.get("/api/v1/teams/mine/").json()["max_retries"] == 1


def test_nul_characters_from_a_node_are_stored_safely() -> None:
    task = submission.task_submit(actor=None, agent_id="echo", start=False)
    sid = str(task.session_id)
    task_services.task_record_progress({sid: {"pct": 10, "message": "a\x00b", "lines": ["x\x00y"]}})
    task_services.task_mark_running(session_id=sid, attempt=1)
    task_services.task_finish(session_id=sid, attempt=1, status="succeeded", output="o\x00k")
    task.refresh_from_db()
    assert (task.message, task.log, task.output) == ("a\ufffdb", ["x\ufffdy"], "o\ufffdk")


def test_a_filter_with_a_nul_character_is_refused_with_a_message(bob: APIClient) -> None:
    response = bob.get("/api/v1/tasks/?node=%00&team=a%00b")
    assert response.status_code == 400
    assert "NUL" in response.json()["detail"]


def test_a_batch_is_stored_whole_or_not_at_all(olga: APIClient) -> None:
    good = {"agent_id": "echo", "input": "x", "strategy": "local"}
    before = db_state()
    bad = olga.post(
        "/api/v1/tasks/batch/",
        {"tasks": [good, {"agent_id": "nope"}, {**good, "affinity": "require_spread"}]},
        format="json",
    )
    assert bad.status_code == 400
    assert set(bad.json()["tasks"]) == {"1", "2"}
    assert "agent_id" in bad.json()["tasks"]["1"] and "affinity" in bad.json()["tasks"]["2"]
    assert db_state() == before
    ok = olga.post("/api/v1/tasks/batch/", {"tasks": [good] * 3}, format="json")
    assert ok.status_code == 201 and len(ok.json()) == 3
    assert Task.objects.count() == 3
    assert olga.post("/api/v1/tasks/batch/", {"tasks": []}, format="json").status_code == 400


def test_node_actions_are_audited_with_their_actor(
    alice: APIClient, bob: APIClient, node: Node
) -> None:
    alice.post("/api/v1/nodes/gpu-1/cordon/")
    alice.patch("/api/v1/nodes/gpu-1/", {"capacity": 3}, format="json")
    alice.post("/api/v1/nodes/gpu-1/uncordon/")
    trail = bob.get("/api/v1/nodes/gpu-1/events/").json()["results"]
    assert [(e["kind"], e["actor"]) for e in trail] == [
        ("created", "system"),
        ("cordoned", "alice"),
        ("edited", "alice"),
        ("uncordoned", "alice"),
    ]
