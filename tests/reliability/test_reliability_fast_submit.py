"""The lean submission path (token-authenticated POSTs served on the event loop), against a
real daphne hub: same JSON, same errors, same status codes as the DRF view."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import TERMINAL, wait_task
from support.live import LiveHub

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    live = LiveHub(Path(tmp_path_factory.mktemp("fast-submit")) / "hub").start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def tokens(hub: LiveHub) -> dict[str, str]:
    return hub.create_users({"alice": "operator", "bob": "viewer", "ada": "admin"})


def post(hub: LiveHub, path: str, raw: bytes, token: str | None, host: str = "") -> tuple[int, Any]:
    request = urllib.request.Request(hub.url + path, data=raw, method="POST")
    request.add_header("Content-Type", "application/json")
    if host:
        request.add_header("Host", host)
    if token is not None:
        request.add_header("Authorization", f"Token {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def post_json(hub: LiveHub, path: str, body: Any, token: str | None) -> tuple[int, Any]:
    return post(hub, path, json.dumps(body).encode(), token)


def test_a_submission_is_stored_started_and_answered_with_the_task(
    hub: LiveHub, tokens: dict[str, str]
) -> None:
    status, task = post_json(
        hub, "/api/v1/tasks/", {"agent_id": "echo", "input": "hi", "strategy": "local"},
        tokens["alice"],
    )  # fmt: skip
    assert status == 201
    assert task["status"] == "pending" and task["input"] == "hi" and task["log"] == []
    done = wait_task(hub, tokens["alice"], task["session_id"], TERMINAL)
    assert done["status"] == "succeeded" and done["output"] == "hi"
    _, events = hub.api("GET", f"/api/v1/tasks/{task['session_id']}/events/", token=tokens["alice"])
    submitted = events["results"][0]
    assert submitted["kind"] == "submitted" and submitted["actor"] == "alice"


def test_a_batch_is_stored_whole(hub: LiveHub, tokens: dict[str, str]) -> None:
    body = {"tasks": [{"agent_id": "echo", "input": str(i), "strategy": "local"} for i in range(5)]}
    status, tasks = post_json(hub, "/api/v1/tasks/batch/", body, tokens["alice"])
    assert status == 201 and [t["input"] for t in tasks] == ["0", "1", "2", "3", "4"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/tasks/", {"input": "x"}, "agent_id"),
        ("/api/v1/tasks/", {"agent_id": "nope"}, "agent_id"),
        ("/api/v1/tasks/", {"agent_id": "echo", "strategy": "sideways"}, "strategy"),
        ("/api/v1/tasks/", {"agent_id": "echo", "affinity": "require_spread"}, "affinity"),
        ("/api/v1/tasks/", {"agent_id": "echo", "node_selector": {"-bad": "x"}}, "node_selector"),
        ("/api/v1/tasks/", {"agent_id": "echo", "input": "a\u0000b"}, "input"),
        ("/api/v1/tasks/batch/", {"tasks": []}, "tasks"),
    ],
)
def test_bad_fields_get_a_400_naming_them(
    hub: LiveHub, tokens: dict[str, str], path: str, body: dict[str, Any], field: str
) -> None:
    status, errors = post_json(hub, path, body, tokens["alice"])
    assert status == 400 and field in errors, errors


def test_a_bad_item_of_a_batch_stores_nothing(hub: LiveHub, tokens: dict[str, str]) -> None:
    _, before = hub.api("GET", "/api/v1/tasks/?page_size=1", token=tokens["alice"])
    body = {"tasks": [{"agent_id": "echo"}, {"agent_id": "echo", "strategy": "nowhere"}]}
    status, errors = post_json(hub, "/api/v1/tasks/batch/", body, tokens["alice"])
    assert status == 400 and list(errors["tasks"]) == ["1"]
    _, after = hub.api("GET", "/api/v1/tasks/?page_size=1", token=tokens["alice"])
    assert after["count"] == before["count"]


@pytest.mark.parametrize("raw", [b"{not json", b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe"])
def test_a_body_that_is_not_json_gets_a_400(
    hub: LiveHub, tokens: dict[str, str], raw: bytes
) -> None:
    status, error = post(hub, "/api/v1/tasks/", raw, tokens["alice"])
    assert status == 400 and "JSON parse error" in error["detail"]


def test_a_wrong_token_is_401_and_a_viewer_is_403(hub: LiveHub, tokens: dict[str, str]) -> None:
    assert post_json(hub, "/api/v1/tasks/", {"agent_id": "echo"}, "wrong")[0] == 401
    status, error = post_json(hub, "/api/v1/tasks/", {"agent_id": "echo"}, tokens["bob"])
    assert status == 403 and "permission" in error["detail"]


def test_an_unknown_host_is_refused(hub: LiveHub, tokens: dict[str, str]) -> None:
    status, error = post(hub, "/api/v1/tasks/", b"{}", tokens["alice"], host="evil.example")
    assert status == 400 and "HTTP_HOST" in error["detail"]


def test_a_body_past_the_request_limit_is_413(hub: LiveHub, tokens: dict[str, str]) -> None:
    _, before = hub.api("GET", "/api/v1/tasks/?page_size=1", token=tokens["alice"])
    item = {"agent_id": "echo", "input": "x" * 256 * 1024, "strategy": "local"}
    raw = json.dumps({"tasks": [item] * 130}).encode()  # past the default 32 MiB
    status, error = post(hub, "/api/v1/tasks/batch/", raw, tokens["alice"])
    assert status == 413 and "HIVEMIND_MAX_REQUEST_BYTES" in error["detail"]
    _, after = hub.api("GET", "/api/v1/tasks/?page_size=1", token=tokens["alice"])
    assert after["count"] == before["count"]


def test_a_batch_of_ten_full_size_inputs_is_taken(hub: LiveHub, tokens: dict[str, str]) -> None:
    item = {"agent_id": "echo", "input": "é" * 128 * 1024, "strategy": "local"}  # 256 KB each
    status, tasks = post(hub, "/api/v1/tasks/batch/", json.dumps({"tasks": [item] * 10}).encode(),
                         tokens["alice"])  # fmt: skip
    assert status == 201 and len(tasks) == 10


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps({"agent_id": "echo", "node_selector": {f"k{i}": "v" for i in range(65)}}),
        '{"tasks": [{"agent_id": "echo", "input": ' + "[" * 40 + "]" * 40 + "}]}",
    ],
    ids=["65 selector labels", "JSON nested past the limit"],
)
def test_a_bad_body_on_the_token_path_is_a_400_with_a_message(
    hub: LiveHub, tokens: dict[str, str], raw: str
) -> None:
    status, error = post(hub, "/api/v1/tasks/", raw.encode(), tokens["alice"])
    assert status == 400 and ("at most 64 labels" in str(error) or "nests deeper" in str(error))


@pytest.mark.parametrize(
    "path", ["/api/v1/nodes/%00/", "/api/v1/teams/a%00/nodes/", "/board/snapshot.json?history=%00"]
)
def test_a_nul_in_a_path_is_a_400_with_a_message(
    hub: LiveHub, tokens: dict[str, str], path: str
) -> None:
    status, error = hub.api("GET", path, token=tokens["alice"])
    assert status == 400 and "NUL" in str(error)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", b"name=form-team&on_failure=retry&max_retries=2"),
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="name"\r\n\r\nmultipart-team'
            b'\r\n--xyz\r\nContent-Disposition: form-data; name="on_failure"\r\n\r\nretry'
            b"\r\n--xyz--\r\n",
        ),
    ],
    ids=["urlencoded", "multipart"],
)
def test_form_bodies_reach_the_application_whole(
    hub: LiveHub, tokens: dict[str, str], content_type: str, body: bytes
) -> None:
    # Twisted no longer parses POST bodies below daphne (the hub reads them itself).
    request = urllib.request.Request(hub.url + "/api/v1/teams/", data=body, method="POST")
    request.add_header("Content-Type", content_type)
    request.add_header("Authorization", f"Token {tokens['ada']}")
    with urllib.request.urlopen(request, timeout=10) as response:
        team = json.loads(response.read())
    assert response.status == 201
    assert team["name"] in ("form-team", "multipart-team") and team["on_failure"] == "retry"
