"""The node protocol: every frame type round-trips, and every malformed frame is refused with a
precise code and message."""

from __future__ import annotations

import json
from typing import Any

import pytest

from executor_core.node import protocol
from executor_core.node.protocol import ProtocolError, encode, parse_frame

VALID: dict[str, dict[str, Any]] = {
    "hello": {
        "name": "gpu-1",
        "version": "0.1.0",
        "labels": {"zone": "eu", "example.com/gpu": "a100"},
        "capacity": 4,
        "agents": ["echo", "sleep"],
        "running": [{"session_id": "s1", "attempt": 2}],
        "capabilities": ["browser", "gpu_inference"],
        "models": ["gpt-4o-mini", "org/llama3:8b"],
    },
    "heartbeat": {
        "running": 1,
        "cpu": 12.5,
        "mem": 40,
        "peak": 3,
        "free_memory_mb": 2048,
        "free_disk_mb": 10000,
    },
    "task.accepted": {"session_id": "s1", "attempt": 1},
    "task.rejected": {"session_id": "s1", "attempt": 1, "reason": "at capacity"},
    "task.progress": {"session_id": "s1", "pct": 100, "message": ""},
    "task.log": {"session_id": "s1", "lines": ["a", "b"]},
    "task.finished": {
        "session_id": "s1",
        "attempt": 1,
        "status": "succeeded",
        "output": "done",
        "error": "",
        "usage": {"model": "small", "prompt_tokens": 12, "first_token_ms": 40.5},
    },
    "draining": {},
    "welcome": {"node": "gpu-1", "heartbeat_interval": 5},
    "task.assign": {
        "session_id": "s1",
        "agent_id": "echo",
        "input": "hi",
        "attempt": 1,
        "model": "gpt-4o-mini",
    },
    "task.cancel": {"session_id": "s1"},
    "node.config": {
        "generation": 3,
        "cordoned": False,
        "draining": True,
        "capacity": 4,
        "labels": {"zone": "eu"},
    },
    "node.state": {
        "generation": 3,
        "cordoned": False,
        "draining": True,
        "stopping": False,
        "capacity": 4,
        "labels": {"zone": "eu"},
        "running": 1,
    },
    "ack": {"session_id": "s1", "attempt": 1},
    "error": {"code": "not_assigned", "message": "task s1 is not assigned to this node"},
}


def frame(type_: str, **changes: Any) -> str:
    """A valid frame of ``type_`` with some fields changed (a value of ... removes the field)."""
    data = {"type": type_, "v": protocol.PROTOCOL_VERSION, **VALID[type_], **changes}
    return json.dumps({k: v for k, v in data.items() if v is not ...})


def sender(type_: str) -> str:
    return protocol.MESSAGES[type_].sender


def test_the_table_defines_every_message_once() -> None:
    assert set(VALID) == set(protocol.MESSAGES)


@pytest.mark.parametrize("type_", sorted(VALID))
def test_every_message_round_trips(type_: str) -> None:
    message = parse_frame(encode(type_, **VALID[type_]), direction=sender(type_))
    assert message.type == type_
    assert dict(message.fields) == {
        k: float(v) if k in ("cpu", "mem", "pct", "heartbeat_interval") else v
        for k, v in VALID[type_].items()
    }


@pytest.mark.parametrize(
    ("type_", "left_out", "default"),
    [
        ("hello", "capabilities", []),
        ("hello", "models", []),
        ("heartbeat", "free_memory_mb", None),
        ("heartbeat", "free_disk_mb", None),
        ("task.assign", "model", ""),
        ("task.finished", "usage", {}),
    ],
)
def test_an_optional_field_left_out_takes_its_default(
    type_: str, left_out: str, default: Any
) -> None:
    message = parse_frame(frame(type_, **{left_out: ...}), direction=sender(type_))
    assert message[left_out] == default


def test_an_encoded_frame_carries_type_and_version() -> None:
    assert json.loads(encode("draining")) == {"type": "draining", "v": 2}


N, H, INVALID = "node", "hub", protocol.INVALID_FIELD
BIG = "x" * (protocol.MAX_FRAME_BYTES + 1)
# Fewer characters than the limit, more bytes: the limit is on the wire size.
WIDE = json.dumps({"type": "task.cancel", "v": 1, "session_id": "é" * 600_000}, ensure_ascii=False)

ERRORS = [
    # (frame, direction, code, words in the message)
    ("{", H, protocol.INVALID_JSON, "not valid JSON"),
    ("", H, protocol.INVALID_JSON, "not valid JSON"),
    ('{"type": "draining", "v": 2, "x": NaN}', N, protocol.INVALID_JSON, "NaN"),
    ("[1, 2]", H, protocol.NOT_AN_OBJECT, "not an array"),
    ('"draining"', N, protocol.NOT_AN_OBJECT, "not a string"),
    ("null", H, protocol.NOT_AN_OBJECT, "not null"),
    ("3", H, protocol.NOT_AN_OBJECT, "not a number"),
    (b'{"type": "draining", "v": 2}', N, protocol.NOT_AN_OBJECT, "not binary"),
    (BIG, H, protocol.FRAME_TOO_LARGE, "larger than 1048576 bytes"),
    (WIDE, H, protocol.FRAME_TOO_LARGE, "larger than 1048576 bytes"),
    ('{"v": 1}', H, protocol.MISSING_FIELD, "no 'type'"),
    ('{"type": 7, "v": 1}', H, INVALID, "'type' must be a string"),
    ('{"type": "draining"}', N, protocol.MISSING_FIELD, "missing protocol version 'v'"),
    # A version 1 node (which knows no node.config) is refused, not half-understood.
    ('{"type": "draining", "v": 1}', N, protocol.UNSUPPORTED_VERSION, "version 1 is not"),
    ('{"type": "draining", "v": true}', N, protocol.UNSUPPORTED_VERSION, "version True"),
    ('{"type": "draining", "v": "2"}', N, protocol.UNSUPPORTED_VERSION, "version '2'"),
    ('{"type": "task.explode", "v": 2}', H, protocol.UNKNOWN_TYPE, "'task.explode'"),
    (frame("hello"), H, protocol.WRONG_DIRECTION, "sent by the node, not the hub"),
    (frame("task.assign"), N, protocol.WRONG_DIRECTION, "sent by the hub, not the node"),
    (frame("hello", capacity=...), N, protocol.MISSING_FIELD, "hello: missing field 'capacity'"),
    (frame("ack", attempt=...), H, protocol.MISSING_FIELD, "ack: missing field 'attempt'"),
    (frame("draining", force=True), N, protocol.UNEXPECTED_FIELD, "unexpected field 'force'"),
    (frame("hello", capabilities="gpu"), N, INVALID, "capabilities must be a list of names"),
    (frame("hello", capabilities=["a b"]), N, INVALID, "'-', '_' or '.' inside"),
    (frame("hello", capabilities=[f"c{i}" for i in range(65)]), N, INVALID, "at most 64"),
    (frame("hello", models=["two words"]), N, INVALID, "hello.models item 0 must not contain"),
    (frame("heartbeat", free_memory_mb=-1), N, INVALID, "free_memory_mb must be between"),
    (frame("task.assign", model="a b"), H, INVALID, "task.assign.model must not contain"),
    (frame("task.accepted", node="x"), N, protocol.UNEXPECTED_FIELD, "field 'node'"),
    # hello
    (frame("hello", name="GPU_1"), N, INVALID, "hello.name must be a DNS label"),
    (frame("hello", name="a" * 64), N, INVALID, "at most 63"),
    (frame("hello", capacity=0), N, INVALID, "between 1 and 1024 (got 0)"),
    (frame("hello", capacity=1025), N, INVALID, "(got 1025)"),
    (frame("hello", capacity=True), N, INVALID, "capacity must be an integer"),
    (frame("hello", capacity=2.5), N, INVALID, "capacity must be an integer"),
    (frame("hello", capacity="2"), N, INVALID, "capacity must be an integer"),
    (frame("hello", labels=["zone"]), N, INVALID, "hello.labels must be an object"),
    (frame("hello", labels={"-bad": "x"}), N, INVALID, "label key '-bad'"),
    (frame("hello", labels={"zone": 3}), N, INVALID, "value must be a string"),
    (frame("hello", agents="echo"), N, INVALID, "agents must be a list"),
    (frame("hello", agents=["echo", 3]), N, INVALID, "agents item 1 must be a string"),
    (frame("hello", version=""), N, INVALID, "version must not be empty"),
    (frame("hello", running=["s1"]), N, INVALID, "running item 0 must be an object"),
    (
        frame("hello", running=[{"session_id": "s1", "attempt": 0}]),
        N,
        INVALID,
        "running item 0 attempt must be at least 1 (got 0)",
    ),
    # node control
    (frame("node.config", cordoned="yes"), H, INVALID, "config.cordoned must be true or false"),
    (frame("node.config", draining=1), H, INVALID, "draining must be true or false"),
    (frame("node.config", capacity=0), H, INVALID, "node.config.capacity must be between 1"),
    (frame("node.config", generation=-1), H, INVALID, "generation must be at least 0"),
    (frame("node.config", labels={"a b": "x"}), H, INVALID, "node.config.labels"),
    (frame("node.config", drain=True), H, protocol.UNEXPECTED_FIELD, "field 'drain'"),
    (frame("node.state", stopping=...), N, protocol.MISSING_FIELD, "missing field 'stopping'"),
    (frame("node.state", running=-2), N, INVALID, "node.state.running must be between 0"),
    (frame("node.config"), N, protocol.WRONG_DIRECTION, "sent by the hub, not the node"),
    # heartbeat
    (frame("heartbeat", cpu=100.5), N, INVALID, "heartbeat.cpu must be between 0 and 100"),
    (frame("heartbeat", mem=-1), N, INVALID, "heartbeat.mem must be between 0 and 100"),
    (frame("heartbeat", cpu="high"), N, INVALID, "cpu must be a number"),
    (frame("heartbeat", running=-1), N, INVALID, "running must be between 0"),
    (frame("heartbeat", peak=None), N, INVALID, "peak must be an integer"),
    # task reports
    (frame("task.accepted", session_id=""), N, INVALID, "session_id must not be empty"),
    (frame("task.accepted", session_id="s" * 129), N, INVALID, "at most 128"),
    (frame("task.accepted", attempt=0), N, INVALID, "attempt must be at least 1"),
    (frame("task.rejected", reason=""), N, INVALID, "reason must not be empty"),
    (frame("task.progress", pct=-0.1), N, INVALID, "pct must be between 0 and 100"),
    (frame("task.progress", pct=101), N, INVALID, "(got 101)"),
    (frame("task.progress", pct="50"), N, INVALID, "pct must be a number"),
    (frame("task.progress", pct=False), N, INVALID, "pct must be a number"),
    (frame("task.progress", message="m" * 1025), N, INVALID, "at most 1024"),
    (frame("task.log", lines=["x"] * 101), N, INVALID, "at most 100 items"),
    (frame("task.log", lines=["x" * 2001]), N, INVALID, "item 0 must be at most 2000"),
    (frame("task.finished", status="done"), N, INVALID, "status must be one of"),
    (frame("task.finished", output=None), N, INVALID, "output must be a string"),
    (
        frame("task.finished", output="o" * (protocol.MAX_PAYLOAD_CHARS + 1)),
        N,
        INVALID,
        "output must be at most 262144 characters",
    ),
    (frame("task.finished", usage=[]), N, INVALID, "usage must be an object"),
    (frame("task.finished", usage={"a": {}}), N, INVALID, "a must be a number, a text"),
    (frame("task.finished", usage={"n": "x" * 257}), N, INVALID, "at most 256 characters"),
    (frame("task.finished", usage={"": 1}), N, INVALID, "keys must be names"),
    (
        frame("task.finished", usage={f"k{i}": i for i in range(17)}),
        N,
        INVALID,
        "usage must hold at most 16 fields (got 17)",
    ),
    # hub -> node
    (frame("welcome", heartbeat_interval=0), H, INVALID, "heartbeat_interval"),
    (frame("task.assign", agent_id=""), H, INVALID, "agent_id must not be empty"),
    (frame("task.assign", input=42), H, INVALID, "input must be a string"),
    (frame("error", code=""), H, INVALID, "code must not be empty"),
]


@pytest.mark.parametrize(
    ("text", "direction", "code", "words"),
    ERRORS,
    ids=[f"{i}-{e[2]}" for i, e in enumerate(ERRORS)],
)
def test_a_malformed_frame_is_refused_precisely(
    text: str, direction: str, code: str, words: str
) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_frame(text, direction=direction)  # type: ignore[arg-type]
    assert caught.value.code == code
    assert words in caught.value.message


def test_encode_refuses_what_parse_would_refuse() -> None:
    with pytest.raises(ProtocolError) as caught:
        encode("task.progress", session_id="s1", pct=250, message="")
    assert caught.value.code == protocol.INVALID_FIELD
    with pytest.raises(ProtocolError) as caught:
        encode("task.launch", session_id="s1")
    assert caught.value.code == protocol.UNKNOWN_TYPE


def test_encode_refuses_a_frame_over_the_size_limit() -> None:
    # Within the character limit, but control characters are escaped to six bytes each.
    output = "\x01" * protocol.MAX_PAYLOAD_CHARS
    with pytest.raises(ProtocolError) as caught:
        encode(
            "task.finished", session_id="s", attempt=1, status="succeeded", output=output, error=""
        )
    assert caught.value.code == protocol.FRAME_TOO_LARGE


def test_non_ascii_text_is_sent_as_is() -> None:
    text = encode("task.progress", session_id="s1", pct=5, message="état ✓")
    assert "état ✓" in text
    assert parse_frame(text, direction="node")["message"] == "état ✓"
