"""The node protocol under abuse, against a real hub: bad frames, bad tokens, foreign tasks.

Each is rejected with an error (a refused handshake or an error frame); the hub keeps serving
and nothing changes in the database.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from helpers import get_task, submit, wait_task
from support.live import LiveHub, wait_for
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from executor_core.node import protocol

pytestmark = pytest.mark.slow


def register(hub: LiveHub, name: str) -> str:
    status, body = hub.api(
        "POST",
        "/api/v1/nodes/register/",
        body={"join_token": hub.join_token, "name": name, "capacity": 2},
    )
    assert status == 201, body
    return body["token"]


def ws_url(hub: LiveHub) -> str:
    return hub.url.replace("http://", "ws://") + "/ws/nodes/"


def frame(type_: str, **fields: Any) -> str:
    return json.dumps({"type": type_, "v": protocol.PROTOCOL_VERSION, **fields})


async def hello(ws: Any, name: str) -> None:
    await ws.send(
        frame("hello", name=name, version="test", labels={}, capacity=2, agents=[], running=[])
    )
    reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert reply["type"] == "welcome", reply


async def expect_error(ws: Any, code: str | None = None) -> dict:
    while True:
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if reply["type"] == "error":
            if code is not None:
                assert reply["code"] == code, reply
            return reply


def test_a_wrong_token_is_refused_at_the_handshake(live_hub: LiveHub) -> None:
    async def attempt(token: str) -> int:
        try:
            async with connect(
                ws_url(live_hub),
                origin=live_hub.url,
                additional_headers={"Authorization": f"Bearer {token}"},
            ):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    assert asyncio.run(attempt("not-a-token")) == 403
    assert asyncio.run(attempt("")) == 403


def test_a_foreign_origin_is_refused(live_hub: LiveHub) -> None:
    token = register(live_hub, "origin-check")

    async def attempt() -> int:
        try:
            async with connect(
                ws_url(live_hub),
                origin="http://evil.example",
                additional_headers={"Authorization": f"Bearer {token}"},
            ):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    assert asyncio.run(attempt()) == 403


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("this is not json", "invalid_json"),
        ("[1, 2]", "not_an_object"),
        (json.dumps({"v": 1}), "missing_field"),
        (json.dumps({"type": "heartbeat", "v": 99}), "unsupported_version"),
        (frame("teleport"), "unknown_type"),
        (frame("heartbeat", running=-1, cpu=1.0, mem=1.0, peak=0), "invalid_field"),
        (frame("task.progress", session_id="x", pct=500, message=""), None),
        (frame("task.assign", session_id="x", agent_id="echo", input="", attempt=1), None),
    ],
)
def test_malformed_frames_get_an_error_frame_and_the_connection_survives(
    live_hub: LiveHub, raw: str, code: str | None
) -> None:
    token = register(live_hub, "sloppy")

    async def scenario() -> None:
        async with connect(
            ws_url(live_hub),
            origin=live_hub.url,
            additional_headers={"Authorization": f"Bearer {token}"},
        ) as ws:
            await hello(ws, "sloppy")
            await ws.send(raw)
            error = await expect_error(ws)
            if code is not None:
                assert error["code"].lower() == code, error
            # Still connected and served.
            await ws.send(frame("heartbeat", running=0, cpu=1.0, mem=1.0, peak=0))
            await ws.send("{")
            await expect_error(ws)

    asyncio.run(scenario())
    assert live_hub.api("GET", "/healthz")[0] == 200


def test_a_node_cannot_report_on_another_nodes_task(hub_factory: Any, node_factory: Any) -> None:
    hub = hub_factory()
    token = hub.create_user("alice", "admin")
    honest = node_factory(hub, "honest", capacity=1)
    honest.wait_ready(token)
    task = submit(hub, token, agent_id="sleep", input="2", strategy="golem")
    sid = task["session_id"]
    wait_task(hub, token, sid, "running")
    mallory = register(hub, "mallory")

    async def scenario() -> None:
        async with connect(
            ws_url(hub), origin=hub.url, additional_headers={"Authorization": f"Bearer {mallory}"}
        ) as ws:
            await hello(ws, "mallory")
            await ws.send(frame("task.progress", session_id=sid, pct=99.0, message="pwned"))
            await expect_error(ws, "not_assigned")
            await ws.send(
                frame(
                    "task.finished",
                    session_id=sid,
                    attempt=1,
                    status="failed",
                    output="",
                    error="pwned",
                )
            )
            await expect_error(ws, "not_assigned")
            await ws.send(frame("task.accepted", session_id=sid, attempt=1))
            # Refusing another node's assignment is refused too (it would move the task).
            await ws.send(frame("task.rejected", session_id=sid, attempt=1, reason="mine now"))
            await expect_error(ws, "not_assigned")
            # Saying hello under another node's name is refused too.
            await ws.send(
                frame(
                    "hello",
                    name="honest",
                    version="x",
                    labels={},
                    capacity=1,
                    agents=[],
                    running=[],
                )
            )
            await expect_error(ws)

    before = get_task(hub, token, sid)
    asyncio.run(scenario())
    after = get_task(hub, token, sid)
    assert (after["status"], after["node"], after["error"]) == ("running", "honest", "")
    assert after["progress"] != 99.0 and after["message"] != "pwned"
    assert before["attempts"] == after["attempts"]
    done = wait_task(hub, token, sid, "succeeded")
    assert done["node"] == "honest"
    wait_for(lambda: hub.api("GET", "/healthz")[0] == 200, timeout=5, what="hub alive")


def test_an_input_too_big_for_a_frame_falls_back_to_local_at_once(
    hub_factory: Any, node_factory: Any
) -> None:
    hub = hub_factory()
    token = hub.create_user("alice", "admin")
    node_factory(hub, "narrow", capacity=1).wait_ready(token)
    # Under the input limit, but every character becomes six bytes of JSON in a frame.
    task = submit(hub, token, agent_id="echo", input="\x01" * 200_000, strategy="golem")
    done = wait_task(hub, token, task["session_id"], "succeeded")
    assert done["route"] == "local" and "cannot be sent" in done["fallback_reason"]
    # The node's connection survived it.
    small = submit(hub, token, agent_id="echo", input="ok", strategy="golem")
    assert wait_task(hub, token, small["session_id"], "succeeded")["node"] == "narrow"
