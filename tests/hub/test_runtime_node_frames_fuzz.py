"""Hostile frames on the node socket: whatever a node sends, the hub answers with protocol
frames (an error frame for a bad one), never an internal error, and the socket stays open.

A property-based fuzz (hypothesis) sends well-formed, nearly well-formed and garbage frames
through one connection; each is followed by a sentinel frame whose error reply proves the
connection still serves. Named cases pin the inputs that once killed the handler."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runtime_support import WAIT
from test_runtime_node_consumer import (  # noqa: F401 - fixtures
    Connect,
    connect,
    receive,
    runtime,
    say_hello,
    token,
)

from executor_core import bounded_json
from executor_core.labels import node_name_error
from executor_core.node import protocol
from hivemind_web.hub.consumers.nodes import NodeConsumer

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

V = protocol.PROTOCOL_VERSION

SENTINEL = json.dumps({"type": "fuzz.sentinel", "v": V})
NODE_TYPES = sorted(t for t, spec in protocol.MESSAGES.items() if spec.sender == protocol.NODE)
FIELDS = sorted({name for spec in protocol.MESSAGES.values() for name in spec.fields})

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
# Values a field might plausibly hold, so that frames get past the first checks.
plausible = (
    json_values
    | st.uuids().map(str)
    | st.integers(min_value=0, max_value=2000)
    | st.sampled_from(protocol.FINISHED_STATUSES)
    | st.text(alphabet="ab\x00\ufffd-=.", max_size=10)
    | st.lists(st.uuids().map(lambda u: {"session_id": str(u), "attempt": 1}), max_size=3)
    | st.dictionaries(st.sampled_from(["zone", "gpu", "a\x00"]), st.text(max_size=5))
)
# hello in another node's name closes the socket by design (its token is for n1).
names = st.text(max_size=12).filter(lambda s: s == "n1" or node_name_error(s) is not None)
frame_objects = st.fixed_dictionaries(
    {
        "type": st.sampled_from(NODE_TYPES) | st.text(max_size=12),
        "v": st.sampled_from([1, 1, 1, 2, "1", True, None]),
    },
    optional={name: names if name == "name" else plausible for name in FIELDS},
)
no_nul = st.characters(exclude_characters="\x00")
session_ids = st.uuids().map(str) | st.text(no_nul, min_size=1, max_size=20)
attempts = st.integers(min_value=1, max_value=5)
percent = st.floats(min_value=0, max_value=100)
# Frames that pass validation, so that the handlers behind it are fuzzed too.
valid_frames = st.one_of(
    st.builds(
        lambda running, cpu, mem: protocol.encode(
            "heartbeat", running=running, cpu=cpu, mem=mem, peak=running
        ),
        st.integers(min_value=0, max_value=protocol.MAX_CAPACITY), percent, percent,
    ),
    st.builds(
        lambda labels, capacity, agents, running: protocol.encode(
            "hello", name="n1", version="1.0", labels=labels, capacity=capacity,
            agents=agents, running=running,
        ),
        st.dictionaries(st.sampled_from(["zone", "gpu", "example.com/x"]),
                        st.sampled_from(["", "a", "b-1"]), max_size=3),
        st.integers(min_value=1, max_value=8),
        st.lists(st.sampled_from(["echo", "sleep", "other"]), max_size=3),
        st.lists(st.builds(lambda s, a: {"session_id": s, "attempt": a}, session_ids, attempts),
                 max_size=3),
    ),
    st.builds(lambda s, a: protocol.encode("task.accepted", session_id=s, attempt=a),
              session_ids, attempts),
    st.builds(lambda s, a, r: protocol.encode("task.rejected", session_id=s, attempt=a, reason=r),
              session_ids, attempts, st.text(min_size=1, max_size=30)),
    st.builds(lambda s, p, m: protocol.encode("task.progress", session_id=s, pct=p, message=m),
              session_ids, percent, st.text(max_size=30)),
    st.builds(lambda s, lines: protocol.encode("task.log", session_id=s, lines=lines),
              session_ids, st.lists(st.text(max_size=30), max_size=5)),
    st.builds(
        lambda s, a, status, out, err: protocol.encode(
            "task.finished", session_id=s, attempt=a, status=status, output=out, error=err
        ),
        session_ids, attempts, st.sampled_from(protocol.FINISHED_STATUSES),
        st.text(max_size=30), st.text(max_size=30),
    ),
    st.just(protocol.encode("draining")),
)  # fmt: skip
frames = st.one_of(
    valid_frames,
    frame_objects.map(json.dumps),
    json_values.map(json.dumps),
    st.text(max_size=200),
    st.integers(min_value=1, max_value=200_000).map(lambda n: "[" * n + "]" * n),
    st.integers(min_value=1, max_value=5_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
)


@pytest.fixture
async def node_socket(
    connect: Connect,  # noqa: F811 - the imported fixture
    token: str,  # noqa: F811
) -> AsyncIterator[WebsocketCommunicator]:
    communicator = await connect(token)
    assert (await say_hello(communicator))["type"] == "welcome"
    yield communicator


async def replies_until_sentinel(communicator: WebsocketCommunicator) -> list[dict[str, Any]]:
    """Every frame the hub sent up to its answer to the sentinel, each a valid hub frame."""
    await communicator.send_to(text_data=SENTINEL)
    replies = []
    while True:
        output = await communicator.receive_output(timeout=WAIT)
        assert output["type"] == "websocket.send", f"the hub closed the socket: {output}"
        message = protocol.parse_frame(output["text"], direction="hub")
        replies.append({"type": message.type, **message.fields})
        if message.type == "error" and "fuzz.sentinel" in message["message"]:
            return replies


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=frames)
async def test_any_frame_gets_protocol_answers_and_the_socket_stays_open(
    node_socket: WebsocketCommunicator, text: str
) -> None:
    await node_socket.send_input({"type": "websocket.receive", "text": text})  # "" too
    replies = await replies_until_sentinel(node_socket)
    internal = [r for r in replies if r["type"] == "error" and r["code"] == "internal"]
    assert internal == [], f"the hub failed on {text[:200]!r}: {internal}"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("[" * 100_000 + "]" * 100_000, protocol.TOO_DEEP),
        (json.dumps({"type": "heartbeat", "v": V, "running": [[[[[[[[[0]]]]]]]]]}),
         protocol.TOO_DEEP),
        ("x" * (protocol.MAX_FRAME_BYTES + 1), protocol.FRAME_TOO_LARGE),
        (protocol.encode("heartbeat", running=0, cpu=0, mem=0, peak=0).replace("0", "1e999", 1),
         protocol.INVALID_FIELD),
        (json.dumps({"type": "task.progress", "v": V, "session_id": "a\x00b", "pct": 1,
                     "message": ""}), protocol.INVALID_FIELD),
        (json.dumps({"type": "hello", "v": V, "name": "n1", "version": "1\x00", "labels": {},
                     "capacity": 1, "agents": [], "running": []}), protocol.INVALID_FIELD),
        (json.dumps({"type": "hello", "v": V, "name": "n1", "version": "1", "labels": {},
                     "capacity": 1, "agents": ["ec\x00ho"], "running": []}),
         protocol.INVALID_FIELD),
        (json.dumps({"type": "hello", "v": V, "name": "n1", "version": "1",
                     "labels": {f"k{i}": "v" for i in range(65)}, "capacity": 1, "agents": [],
                     "running": []}), protocol.INVALID_FIELD),
    ],
    ids=[
        "100,000 brackets",
        "nesting past the limit",
        "a frame over the size limit",
        "an infinite number",
        "NUL in a session id",
        "NUL in the version",
        "NUL in an agent name",
        "65 labels",
    ],
)  # fmt: skip
async def test_a_frame_that_once_broke_the_handler_gets_an_error_frame(
    node_socket: WebsocketCommunicator, text: str, code: str
) -> None:
    await node_socket.send_to(text_data=text)
    reply = await receive(node_socket)
    assert (reply["type"], reply["code"]) == ("error", code), reply
    assert reply["message"]
    assert (await say_hello(node_socket))["type"] == "welcome"


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "task.accepted", "v": V, "session_id": "not-a-uuid", "attempt": 1},
        {"type": "task.progress", "v": V, "session_id": "s", "pct": 5, "message": ""},
        {"type": "task.log", "v": V, "session_id": "s", "lines": ["x"]},
        {"type": "task.finished", "v": V, "session_id": "s", "attempt": 1,
         "status": "succeeded", "output": "", "error": ""},
    ],
    ids=["accepted", "progress", "log", "finished"],
)  # fmt: skip
async def test_a_report_on_a_session_id_that_is_no_uuid_is_not_assigned(
    node_socket: WebsocketCommunicator, frame: dict[str, Any]
) -> None:
    await node_socket.send_to(text_data=json.dumps(frame))
    replies = await replies_until_sentinel(node_socket)
    assert ("error", "not_assigned") in [(r["type"], r.get("code")) for r in replies]


def test_the_frame_depth_limit_is_below_the_json_one() -> None:
    assert protocol.MAX_DEPTH < bounded_json.MAX_DEPTH


async def test_a_hub_behind_tls_refuses_a_node_over_plain_ws_saying_why(
    connect: Connect,  # noqa: F811
    token: str,  # noqa: F811
    settings: Any,
) -> None:
    settings.SECURE_SSL_REDIRECT = True
    communicator = await connect(token)
    reply = await receive(communicator)
    assert (reply["type"], reply["code"]) == ("error", "insecure")
    assert "wss://" in reply["message"]
    closed = await communicator.receive_output(timeout=WAIT)
    assert closed == {"type": "websocket.close", "code": protocol.CLOSE_FORBIDDEN}


async def test_a_hub_behind_tls_takes_a_node_the_trusted_proxy_vouches_for(
    token: str,  # noqa: F811
    settings: Any,
) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    headers = [(b"authorization", f"Bearer {token}".encode()), (b"x-forwarded-proto", b"https")]
    communicator = WebsocketCommunicator(NodeConsumer.as_asgi(), "/ws/nodes/", headers)
    connected, _ = await communicator.connect(timeout=WAIT)
    assert connected
    assert (await say_hello(communicator))["type"] == "welcome"
    await communicator.disconnect()
