"""The node protocol: versioned JSON frames between a Golem node and the hub (DESIGN §6).

Every frame is a JSON object ``{"type": ..., "v": 1, ...fields}``. Both sides import this
module: the node parses hub frames with ``parse_frame(text, direction="hub")`` and the hub
parses node frames with ``direction="node"`` (the direction names the sender). Each message
type is defined once, in ``MESSAGES``: who sends it and a validator per field. Unknown or
missing fields, wrong types and oversized frames are refused with a ``ProtocolError`` whose
``code`` is one of the constants below, so a peer can answer with an ``error`` frame.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from executor_core import bounded_json
from executor_core.labels import (
    MAX_NAMES,
    LabelError,
    names_error,
    node_name_error,
    validate_labels,
)
from executor_core.types import ExecutorError, model_name_error

# 2: the hub's node.config (cordon, drain, capacity, labels) replaces drain, and the node
# answers with node.state, its own view of itself.
PROTOCOL_VERSION = 2
WS_PATH = "ws/nodes/"
REGISTER_PATH = "api/v1/nodes/register/"

Direction = Literal["node", "hub"]
NODE: Direction = "node"
HUB: Direction = "hub"

# Bounds. A frame is measured in UTF-8 bytes; text fields in characters.
MAX_FRAME_BYTES = 1024 * 1024
# What the hub's WebSocket server should accept (daphne --websocket-max-message-size): more
# than a frame may hold, so a frame past MAX_FRAME_BYTES is answered with an error frame
# instead of a dropped connection. Past this, the server drops it.
TRANSPORT_MAX_BYTES = 4 * MAX_FRAME_BYTES
MAX_PAYLOAD_CHARS = 256 * 1024  # a task's input or output
MAX_ERROR_CHARS = 16 * 1024
MAX_MESSAGE_CHARS = 1024  # progress messages, rejection reasons, error frames
MAX_LOG_LINES = 100  # per task.log frame
MAX_LOG_LINE_CHARS = 2000
MAX_ID_CHARS = 128  # session ids, agent ids
MAX_CAPACITY = 1024
MAX_AGENTS = 256
MAX_DEPTH = 8  # the deepest frame (hello's running list) nests 3 levels
MAX_MEGABYTES = 1 << 40

# ProtocolError codes.
FRAME_TOO_LARGE = "frame_too_large"
INVALID_JSON = "invalid_json"
TOO_DEEP = "too_deep"
NOT_AN_OBJECT = "not_an_object"
UNSUPPORTED_VERSION = "unsupported_version"
UNKNOWN_TYPE = "unknown_type"
WRONG_DIRECTION = "wrong_direction"
MISSING_FIELD = "missing_field"
UNEXPECTED_FIELD = "unexpected_field"
INVALID_FIELD = "invalid_field"

# WebSocket close codes a hub may use after the handshake. The node treats the first two
# as fatal (its credentials are no good); CONFLICT means another connection holds this
# node's identity right now, and the node retries with backoff.
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_CONFLICT = 4409

# Task outcomes a node reports in task.finished.
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
FINISHED_STATUSES = (SUCCEEDED, FAILED, CANCELLED)


class ProtocolError(ExecutorError, ValueError):
    """A frame that breaks the protocol. ``code`` is machine-readable, ``message`` precise."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Message:
    """One validated frame: its type and its fields (``v`` and ``type`` removed)."""

    type: str
    fields: Mapping[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)


class _Invalid(Exception):
    """Raised by a field validator; turned into INVALID_FIELD with the field's name."""


Validator = Callable[[Any], Any]


def _text(max_chars: int, *, nonempty: bool = False, name: bool = False) -> Validator:
    """``name``: an identifier (a session or agent id, a version), never holding NUL,
    which no database stores and no name needs; free text may, and is cleaned on storing."""

    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise _Invalid("must be a string")
        if nonempty and not value:
            raise _Invalid("must not be empty")
        if name and "\x00" in value:
            raise _Invalid("must not contain NUL characters")
        if len(value) > max_chars:
            raise _Invalid(f"must be at most {max_chars} characters (got {len(value)})")
        return value

    return check


def _integer(lo: int, hi: int | None = None) -> Validator:
    def check(value: Any) -> int:
        # bool is an int subclass; true/false is never a count.
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Invalid("must be an integer")
        if value < lo or (hi is not None and value > hi):
            bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            raise _Invalid(f"must be {bound} (got {value})")
        return value

    return check


def _number(lo: float, hi: float) -> Validator:
    def check(value: Any) -> float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _Invalid("must be a number")
        if not math.isfinite(value) or not lo <= value <= hi:
            raise _Invalid(f"must be between {lo:g} and {hi:g} (got {value!r})")
        return float(value)

    return check


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("must be true or false")
    return value


def _choice(*choices: str) -> Validator:
    def check(value: Any) -> str:
        if value not in choices:
            raise _Invalid(f"must be one of {', '.join(choices)} (got {value!r})")
        return value

    return check


def _text_list(max_items: int, max_chars: int, *, name: bool = False) -> Validator:
    item = _text(max_chars, name=name)

    def check(value: Any) -> list[str]:
        if not isinstance(value, list):
            raise _Invalid("must be a list of strings")
        if len(value) > max_items:
            raise _Invalid(f"must hold at most {max_items} items (got {len(value)})")
        for i, v in enumerate(value):
            try:
                item(v)
            except _Invalid as exc:
                raise _Invalid(f"item {i} {exc}") from None
        return list(value)

    return check


def _node_name(value: Any) -> str:
    problem = node_name_error(value)
    if problem:
        raise _Invalid(problem)
    return value


def _labels(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _Invalid("must be an object of label keys to values")
    try:
        return validate_labels(value)
    except LabelError as exc:
        raise _Invalid(str(exc)) from None


_session_id = _text(MAX_ID_CHARS, nonempty=True, name=True)
_attempt = _integer(1)


def _running_tasks(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise _Invalid("must be a list of {session_id, attempt} objects")
    if len(value) > MAX_CAPACITY:
        raise _Invalid(f"must hold at most {MAX_CAPACITY} items (got {len(value)})")
    tasks = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or set(item) != {"session_id", "attempt"}:
            raise _Invalid(f"item {i} must be an object with exactly session_id and attempt")
        for name, check in (("session_id", _session_id), ("attempt", _attempt)):
            try:
                check(item[name])
            except _Invalid as exc:
                raise _Invalid(f"item {i} {name} {exc}") from None
        tasks.append(dict(item))
    return tasks


@dataclass(frozen=True)
class MessageSpec:
    sender: Direction
    fields: Mapping[str, Validator]
    # Fields a peer may leave out (older nodes, nothing to say), with the value they take.
    optional: Mapping[str, Any] = field(default_factory=dict)


MAX_USAGE_FIELDS = 16


def _usage(value: Any) -> dict[str, Any]:
    """What a run consumed: a small flat object of names to numbers, short texts or null."""
    if not isinstance(value, dict):
        raise _Invalid("must be an object")
    if len(value) > MAX_USAGE_FIELDS:
        raise _Invalid(f"must hold at most {MAX_USAGE_FIELDS} fields (got {len(value)})")
    for key, item in value.items():
        if not isinstance(key, str) or not 0 < len(key) <= 64:
            raise _Invalid("keys must be names of at most 64 characters")
        number = isinstance(item, int | float) and not isinstance(item, bool)
        if number and not math.isfinite(item):
            raise _Invalid(f"{key} must be a finite number")
        if not (item is None or number or (isinstance(item, str) and len(item) <= 256)):
            raise _Invalid(f"{key} must be a number, a text of at most 256 characters or null")
    return dict(value)


def _names(what: str) -> Validator:
    def check(value: Any) -> list[str]:
        problem = names_error(value, what=what)
        if problem:
            raise _Invalid(problem)
        return sorted(set(value))

    return check


def _model(value: Any) -> str:
    problem = model_name_error(value)
    if problem:
        raise _Invalid(problem)
    return value


def _models(value: Any) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_NAMES:
        raise _Invalid(f"must be a list of at most {MAX_NAMES} model names")
    for i, item in enumerate(value):
        if not item or (problem := model_name_error(item)):
            raise _Invalid(f"item {i} {problem or 'must not be empty'}")
    return sorted(set(value))


def _megabytes(value: Any) -> int | None:
    if value is None:
        return None
    return _integer(0, MAX_MEGABYTES)(value)


# The one definition of every message: its sender and its fields, required unless optional.
MESSAGES: Mapping[str, MessageSpec] = MappingProxyType(
    {
        # node -> hub
        "hello": MessageSpec(
            NODE,
            {
                "name": _node_name,
                "version": _text(64, nonempty=True, name=True),
                "labels": _labels,
                "capacity": _integer(1, MAX_CAPACITY),
                "agents": _text_list(MAX_AGENTS, MAX_ID_CHARS, name=True),
                "running": _running_tasks,
                "capabilities": _names("capabilities"),
                "models": _models,
            },
            optional={"capabilities": [], "models": []},
        ),
        # ``cpu``: the node process's share of the host's CPU (its agents included);
        # ``mem``, ``free_memory_mb``: the host's; ``free_disk_mb``: where the node keeps
        # its state. Nodes that cannot tell leave the free figures null.
        "heartbeat": MessageSpec(
            NODE,
            {
                "running": _integer(0, MAX_CAPACITY),
                "cpu": _number(0, 100),
                "mem": _number(0, 100),
                "peak": _integer(0, MAX_CAPACITY),
                "free_memory_mb": _megabytes,
                "free_disk_mb": _megabytes,
            },
            optional={"free_memory_mb": None, "free_disk_mb": None},
        ),
        "task.accepted": MessageSpec(NODE, {"session_id": _session_id, "attempt": _attempt}),
        "task.rejected": MessageSpec(
            NODE,
            {
                "session_id": _session_id,
                "attempt": _attempt,
                "reason": _text(MAX_MESSAGE_CHARS, nonempty=True),
            },
        ),
        "task.progress": MessageSpec(
            NODE,
            {
                "session_id": _session_id,
                "pct": _number(0, 100),
                "message": _text(MAX_MESSAGE_CHARS),
            },
        ),
        "task.log": MessageSpec(
            NODE,
            {"session_id": _session_id, "lines": _text_list(MAX_LOG_LINES, MAX_LOG_LINE_CHARS)},
        ),
        "task.finished": MessageSpec(
            NODE,
            {
                "session_id": _session_id,
                "attempt": _attempt,
                "status": _choice(*FINISHED_STATUSES),
                "output": _text(MAX_PAYLOAD_CHARS),
                "error": _text(MAX_ERROR_CHARS),
                "usage": _usage,  # what the run consumed (model, tokens); {} for nothing
            },
            optional={"usage": {}},
        ),
        "draining": MessageSpec(NODE, {}),
        # The node's own state, after hello and after every node.config it applied.
        "node.state": MessageSpec(
            NODE,
            {
                "generation": _integer(0),
                "cordoned": _flag,
                "draining": _flag,
                "stopping": _flag,
                "capacity": _integer(1, MAX_CAPACITY),
                "labels": _labels,
                "running": _integer(0, MAX_CAPACITY),
            },
        ),
        # hub -> node
        "welcome": MessageSpec(
            HUB, {"node": _node_name, "heartbeat_interval": _number(0.01, 3600)}
        ),
        "task.assign": MessageSpec(
            HUB,
            {
                "session_id": _session_id,
                "agent_id": _text(MAX_ID_CHARS, nonempty=True, name=True),
                "input": _text(MAX_PAYLOAD_CHARS),
                "attempt": _attempt,
                "model": _model,  # the model the task asked for; "" for the agent's own
            },
            optional={"model": ""},
        ),
        "task.cancel": MessageSpec(HUB, {"session_id": _session_id}),
        # What the hub's operators decided about this node; ``generation`` grows with each
        # change, so the node's node.state says which one it applied.
        "node.config": MessageSpec(
            HUB,
            {
                "generation": _integer(0),
                "cordoned": _flag,
                "draining": _flag,
                "capacity": _integer(1, MAX_CAPACITY),
                "labels": _labels,
            },
        ),
        "ack": MessageSpec(HUB, {"session_id": _session_id, "attempt": _attempt}),
        "error": MessageSpec(
            HUB, {"code": _text(64, nonempty=True), "message": _text(MAX_MESSAGE_CHARS)}
        ),
    }
)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _check_size(text: str) -> None:
    # A character is at most 4 UTF-8 bytes: only encode when the length alone cannot decide.
    if len(text) > MAX_FRAME_BYTES or (
        len(text) * 4 > MAX_FRAME_BYTES and len(text.encode("utf-8")) > MAX_FRAME_BYTES
    ):
        raise ProtocolError(FRAME_TOO_LARGE, f"frame is larger than {MAX_FRAME_BYTES} bytes")


def _validate(type_: str, raw: Mapping[str, Any], spec: MessageSpec) -> Message:
    extra = sorted(set(raw) - set(spec.fields))
    if extra:
        raise ProtocolError(UNEXPECTED_FIELD, f"{type_}: unexpected field {extra[0]!r}")
    fields: dict[str, Any] = {}
    for name, check in spec.fields.items():
        if name not in raw and name in spec.optional:
            fields[name] = spec.optional[name]
            continue
        if name not in raw:
            raise ProtocolError(MISSING_FIELD, f"{type_}: missing field {name!r}")
        try:
            fields[name] = check(raw[name])
        except _Invalid as exc:
            raise ProtocolError(INVALID_FIELD, f"{type_}.{name} {exc}") from None
    return Message(type_, MappingProxyType(fields))


def parse_frame(text: str | bytes, *, direction: Direction) -> Message:
    """Validate one frame sent by ``direction`` ("node" or "hub") and return it."""
    if isinstance(text, bytes | bytearray):
        raise ProtocolError(NOT_AN_OBJECT, "frame must be a text frame, not binary")
    _check_size(text)
    try:
        data = bounded_json.loads(text, max_depth=MAX_DEPTH, parse_constant=_reject_constant)
    except bounded_json.TooDeep as exc:
        raise ProtocolError(TOO_DEEP, f"frame {exc}") from None
    except ValueError as exc:
        raise ProtocolError(INVALID_JSON, f"frame is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError(NOT_AN_OBJECT, f"frame must be a JSON object, not {_kind(data)}")
    type_ = data.pop("type", None)
    if type_ is None:
        raise ProtocolError(MISSING_FIELD, "frame has no 'type'")
    if not isinstance(type_, str):
        raise ProtocolError(INVALID_FIELD, f"'type' must be a string, not {_kind(type_)}")
    if "v" not in data:
        raise ProtocolError(MISSING_FIELD, f"{type_}: missing protocol version 'v'")
    version = data.pop("v")
    if version != PROTOCOL_VERSION or isinstance(version, bool):
        raise ProtocolError(
            UNSUPPORTED_VERSION,
            f"{type_}: protocol version {version!r} is not supported (expected {PROTOCOL_VERSION})",
        )
    spec = MESSAGES.get(type_)
    if spec is None:
        raise ProtocolError(UNKNOWN_TYPE, f"unknown message type {type_!r}")
    if spec.sender != direction:
        raise ProtocolError(
            WRONG_DIRECTION, f"{type_!r} is sent by the {spec.sender}, not the {direction}"
        )
    return _validate(type_, data, spec)


def encode(type_: str, /, **fields: Any) -> str:
    """Build a frame of ``type_``, validated like a received one (ProtocolError otherwise)."""
    spec = MESSAGES.get(type_)
    if spec is None:
        raise ProtocolError(UNKNOWN_TYPE, f"unknown message type {type_!r}")
    message = _validate(type_, fields, spec)
    # An optional field at its default stays off the wire: a peer that predates it still
    # takes the frame.
    sent = {
        k: v for k, v in message.fields.items() if k not in spec.optional or v != spec.optional[k]
    }
    text = json.dumps(
        {"type": type_, "v": PROTOCOL_VERSION, **sent},
        ensure_ascii=False,
        separators=(",", ":"),
        allow_nan=False,
    )
    _check_size(text)
    return text


_JSON_KINDS = {list: "an array", str: "a string", bool: "a boolean", int: "a number",
               float: "a number", type(None): "null"}  # fmt: skip


def _kind(value: object) -> str:
    """How JSON calls the kind of a decoded value."""
    return _JSON_KINDS.get(type(value), type(value).__name__)
