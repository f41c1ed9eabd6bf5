"""Hardening against a real daphne hub: registration is throttled per address, a hub behind
TLS redirects plain HTTP (health checks excepted), and hostile node frames get error frames
on a real socket that stays open."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.live import LiveHub
from websockets.asyncio.client import connect
from websockets.typing import Origin

from executor_core.node import protocol

pytestmark = pytest.mark.slow
V = protocol.PROTOCOL_VERSION


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    data = Path(tmp_path_factory.mktemp("hardening")) / "hub"
    live = LiveHub(data, extra_env={"HIVEMIND_REGISTER_RATE": "10/min"}).start()
    yield live
    live.stop()


def register(hub: LiveHub, token: str, name: str) -> int:
    body = json.dumps({"join_token": token, "name": name}).encode()
    request = urllib.request.Request(
        hub.url + "/api/v1/nodes/register/", data=body, method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_11th_registration_attempt_in_a_minute_gets_429(hub: LiveHub) -> None:
    answers = [register(hub, "wrong-" + "é" * i, f"guess-{i}") for i in range(10)]
    assert answers == [403] * 10
    assert register(hub, hub.join_token, "real") == 429
    status, nodes = hub.api("GET", "/api/v1/nodes/", token=hub.create_user("alice", "admin"))
    assert status == 200 and nodes["count"] == 0


async def _reply(ws: Any) -> dict[str, Any]:
    """The hub's next answer, past the node.config it pushes after each welcome."""
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if frame["type"] != "node.config":
            return frame


async def _hostile_frames(url: str, origin: str, token: str) -> list[dict]:
    replies = []
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(url, additional_headers=headers, origin=Origin(origin), max_size=None) as ws:
        hello = protocol.encode("hello", name="n1", version="1", labels={}, capacity=1,
                                agents=["echo"], running=[])  # fmt: skip
        await ws.send(hello)
        replies.append(await _reply(ws))
        for text in (
            "[" * 100_000 + "]" * 100_000,
            json.dumps({"type": "heartbeat", "v": V, "running": [[[[[[[[[[0]]]]]]]]]]}),
            "x" * (protocol.MAX_FRAME_BYTES + 1),
            json.dumps({"type": "task.progress", "v": V, "session_id": "a\x00", "pct": 1,
                        "message": ""}),
        ):  # fmt: skip
            await ws.send(text)
            replies.append(await _reply(ws))
        await ws.send(hello)  # still served
        replies.append(await _reply(ws))
    return replies


def test_hostile_frames_get_error_frames_and_the_socket_stays_open(hub: LiveHub) -> None:
    token = hub.manage("node_token", "n1").strip()
    url = hub.url.replace("http://", "ws://") + "/" + protocol.WS_PATH
    replies = asyncio.run(_hostile_frames(url, hub.url, token))
    assert [(r["type"], r.get("code")) for r in replies] == [
        ("welcome", None),
        ("error", protocol.TOO_DEEP),
        ("error", protocol.TOO_DEEP),
        ("error", protocol.FRAME_TOO_LARGE),
        ("error", protocol.INVALID_FIELD),
        ("welcome", None),
    ]
    assert f"deeper than {protocol.MAX_DEPTH} levels" in replies[1]["message"]


def test_a_hub_behind_tls_redirects_plain_http_but_not_health_checks(tmp_path: Path) -> None:
    live = LiveHub(tmp_path / "tls", extra_env={"HIVEMIND_HTTPS": "true"}).start()
    try:

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: object, **kwargs: object) -> None:
                return None

        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as answer:
            opener.open(live.url + "/api/v1/nodes/", timeout=10)
        assert answer.value.code == 301
        assert answer.value.headers["Location"].startswith("https://")
        with opener.open(live.url + "/healthz", timeout=10) as health:
            assert health.status == 200
    finally:
        live.stop()
