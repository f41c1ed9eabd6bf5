"""Hostile input to the API and the admin gets a 4xx with a message and stores nothing:
non-ASCII secrets, JSON nested past the limit, NUL characters in paths and queries, too many
labels, bodies over the request limit; and a bad setting stops the hub naming the variable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient
from test_hub_admin import staff
from test_hub_api import client_for, db_state

from executor_core import bounded_json
from executor_core.labels import MAX_LABELS
from hivemind_web.hub.models import Node
from hivemind_web.hub.services import nodes as node_services

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parents[2]
JOIN_TOKEN = "the-join-token"
TOO_MANY_LABELS = {f"k{i}": "v" for i in range(MAX_LABELS + 1)}
DEEP = "[" * 100_000 + "]" * 100_000


def nested(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


@pytest.fixture
def olga() -> APIClient:
    """An operator."""
    return client_for("olga", "operator")


@pytest.fixture
def alice() -> APIClient:
    """The admin."""
    return client_for("alice", "admin")


@pytest.fixture
def join_token(settings: Any) -> str:
    settings.HIVEMIND = {**settings.HIVEMIND, "JOIN_TOKEN": JOIN_TOKEN}
    return JOIN_TOKEN


@pytest.fixture
def node() -> Node:
    return node_services.node_create(name="gpu-1", labels={"gpu": "true"}, capacity=2)[0]


@pytest.mark.parametrize("given", ["jöin-tökén", "令牌", JOIN_TOKEN + "é"])
def test_a_non_ascii_join_token_is_refused_like_any_wrong_one(
    client: Client, join_token: str, given: str
) -> None:
    body = json.dumps({"join_token": given, "name": "n1"}, ensure_ascii=True)
    response = client.post("/api/v1/nodes/register/", body, content_type="application/json")
    assert response.status_code == 403
    assert response.json() == {"detail": node_services.ERR_JOIN_TOKEN}
    assert not Node.objects.exists()


def test_the_right_join_token_still_registers(client: Client, join_token: str) -> None:
    body = {"join_token": JOIN_TOKEN, "name": "n1"}
    response = client.post("/api/v1/nodes/register/", body, content_type="application/json")
    assert response.status_code == 201 and response.json()["token"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/api/v1/tasks/"),
        ("post", "/api/v1/tasks/batch/"),
        ("post", "/api/v1/teams/"),
        ("patch", "/api/v1/nodes/gpu-1/"),
        ("patch", "/api/v1/teams/red/"),
    ],
)
@pytest.mark.parametrize(
    "body",
    [
        DEEP,
        json.dumps({"agent_id": "echo", "node_selector": nested(bounded_json.MAX_DEPTH)}),
        json.dumps({"tasks": [{"agent_id": "echo", "input": nested(bounded_json.MAX_DEPTH)}]}),
    ],
    ids=["100,000 brackets", "a nested selector", "a nested batch item"],
)
def test_json_nested_past_the_limit_is_a_400_that_says_so(
    alice: APIClient, node: Node, method: str, path: str, body: str
) -> None:
    before = db_state()
    response = getattr(alice, method)(path, body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json() == {
        "detail": f"JSON parse error - JSON nests deeper than {bounded_json.MAX_DEPTH} levels"
    }
    assert db_state() == before


def test_registration_refuses_deep_json_too(client: Client, join_token: str) -> None:
    response = client.post("/api/v1/nodes/register/", DEEP, content_type="application/json")
    assert response.status_code == 400 and "nests deeper" in response.json()["detail"]
    assert not Node.objects.exists()


def test_json_within_the_limit_is_taken() -> None:
    assert bounded_json.loads(json.dumps(nested(bounded_json.MAX_DEPTH - 1)))


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/nodes/%00/",
        "/api/v1/nodes/gpu%00-1/tasks/",
        "/api/v1/teams/red%00/",
        "/api/v1/teams/%00/nodes/",
        "/api/v1/tasks/%00/",
        "/api/v1/tasks/?team=%00",
        "/api/v1/tasks/?q=a%00b",
    ],
)
def test_a_nul_in_a_path_or_query_is_a_400_with_a_message(
    alice: APIClient, node: Node, path: str
) -> None:
    response = alice.get(path)
    assert response.status_code == 400
    assert "NUL" in response.json()["detail"]


def test_a_nul_in_a_patch_path_changes_nothing(alice: APIClient, node: Node) -> None:
    response = alice.patch("/api/v1/nodes/gpu-1%00/", {"capacity": 5}, format="json")
    assert response.status_code == 400
    node.refresh_from_db()
    assert node.capacity == 2


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("post", "/api/v1/tasks/", {"agent_id": "echo", "node_selector": TOO_MANY_LABELS},
         "node_selector"),
        ("post", "/api/v1/tasks/batch/",
         {"tasks": [{"agent_id": "echo", "node_selector": TOO_MANY_LABELS}]}, "tasks"),
        ("patch", "/api/v1/nodes/gpu-1/", {"labels": TOO_MANY_LABELS}, "labels"),
    ],
    ids=["a selector", "a selector in a batch", "a node's labels"],
)  # fmt: skip
def test_more_than_64_labels_are_refused_with_a_message(
    alice: APIClient, node: Node, method: str, path: str, body: dict[str, Any], field: str
) -> None:
    before = db_state()
    response = getattr(alice, method)(path, body, format="json")
    assert response.status_code == 400
    assert f"at most {MAX_LABELS} labels" in json.dumps(response.json()[field])
    assert db_state() == before
    node.refresh_from_db()
    assert node.labels == {"gpu": "true"}


def test_registration_refuses_more_than_64_labels(client: Client, join_token: str) -> None:
    body = {"join_token": JOIN_TOKEN, "name": "n1", "labels": TOO_MANY_LABELS}
    response = client.post("/api/v1/nodes/register/", body, content_type="application/json")
    assert response.status_code == 400 and "at most 64 labels" in response.json()["labels"][0]
    assert not Node.objects.exists()


def test_the_admin_refuses_more_than_64_labels(node: Node) -> None:
    alice = staff("alice-admin", "admin")
    lines = "\n".join(f"{k}={v}" for k, v in TOO_MANY_LABELS.items())
    response = alice.post(
        f"/admin/hub/node/{node.pk}/change/", {"capacity": 2, "labels_text": lines}
    )
    assert response.status_code == 200 and "at most 64 labels" in response.content.decode()
    node.refresh_from_db()
    assert node.labels == {"gpu": "true"}


def test_exactly_64_labels_are_taken(alice: APIClient, node: Node) -> None:
    labels = {f"k{i}": "v" for i in range(MAX_LABELS)}
    response = alice.patch("/api/v1/nodes/gpu-1/", {"labels": labels}, format="json")
    assert response.status_code == 200 and response.json()["labels"] == labels


def test_a_batch_of_ten_full_size_inputs_is_taken(olga: APIClient) -> None:
    item = {"agent_id": "echo", "input": "x" * 256 * 1024, "strategy": "local"}
    response = olga.post("/api/v1/tasks/batch/", {"tasks": [item] * 10}, format="json")
    assert response.status_code == 201, response.content[:300]
    assert len(response.json()) == 10


@pytest.mark.parametrize("path", ["/api/v1/tasks/", "/api/v1/tasks/batch/"])
def test_a_body_over_the_request_limit_is_a_json_413(
    olga: APIClient, settings: Any, path: str
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100_000
    item = {"agent_id": "echo", "input": "x" * 60_000, "strategy": "local"}
    body = {"tasks": [item, item]} if path.endswith("batch/") else {**item, "input": "x" * 200_000}
    before = db_state()
    response = olga.post(path, body, format="json")
    assert response.status_code == 413
    assert response.json() == {
        "detail": "the request body is larger than 100000 bytes (HIVEMIND_MAX_REQUEST_BYTES); "
        "send fewer tasks per batch"
    }
    assert db_state() == before


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("HIVEMIND_LOST_AFTER", "nan", "must be a finite number"),
        ("HIVEMIND_HEARTBEAT_GRACE", "inf", "must be a finite number"),
        ("HIVEMIND_ASSIGN_TIMEOUT", "-1", "must be >= 0.1"),
        ("HIVEMIND_LOCAL_CONCURRENCY", "four", "must be an integer"),
        ("HIVEMIND_MAX_REQUEST_BYTES", "10", "must be >= 65536"),
    ],
)
def test_a_bad_setting_stops_the_hub_naming_the_variable(
    tmp_path: Path, name: str, value: str, says: str
) -> None:
    done = run_manage("check", HIVEMIND_DATA_DIR=str(tmp_path), **{name: value})
    assert done.returncode != 0
    assert f"{name} {says}" in done.stderr
