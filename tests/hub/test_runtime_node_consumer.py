"""The node WebSocket (DESIGN §6) against a real hub runtime on the test's loop: the token
is checked at the handshake, hello comes first, every bad frame is answered with an error
frame (and the connection stays up), and a node's reports move its tasks in the database."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from runtime_support import WAIT, bound_task, eventually, node_row, ready_node, task_row

from executor_core.node import protocol
from hivemind_web.hub.consumers.nodes import NodeConsumer
from hivemind_web.hub.execution import reaper as reaper_module
from hivemind_web.hub.execution.reaper import Reaper
from hivemind_web.hub.execution.runtime import Runtime, ensure_started, reset_runtime
from hivemind_web.hub.models import Node
from hivemind_web.hub.services import submission

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

Connect = Callable[..., Awaitable[WebsocketCommunicator]]


@pytest.fixture
async def runtime(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Runtime]:
    # The housekeeping tick would take the heartbeats away under the tests' eyes; the
    # tests that want it tick it themselves.
    monkeypatch.setattr(reaper_module, "TICK", 3600.0)
    layer = get_channel_layer()
    await layer.flush()
    started = await ensure_started()
    yield started
    reset_runtime()
    await layer.flush()


@pytest.fixture
async def token(runtime: Runtime) -> str:
    return await runtime.write(ready_node, "n1", capacity=2)


@pytest.fixture
async def connect(runtime: Runtime) -> AsyncIterator[Connect]:
    open_ones: list[WebsocketCommunicator] = []

    async def make(token: str, *, expect: bool = True) -> WebsocketCommunicator:
        headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
        communicator = WebsocketCommunicator(NodeConsumer.as_asgi(), "/ws/nodes/", headers)
        connected, _code = await communicator.connect(timeout=WAIT)
        assert connected is expect
        if connected:
            open_ones.append(communicator)
        return communicator

    yield make
    for communicator in open_ones:  # before the runtime goes: disconnect writes through it
        if not communicator.future.done():  # a receive that timed out stopped the consumer
            await communicator.disconnect()


def frame(type_: str, **fields: Any) -> str:
    return protocol.encode(type_, **fields)


def hello(name: str = "n1", running: list[dict[str, Any]] | None = None) -> str:
    return frame(
        "hello",
        name=name,
        version="1.0",
        labels={"zone": "a"},
        capacity=2,
        agents=["echo"],
        running=running or [],
        capabilities=["browser"],
        models=["llama3:8b"],
    )


def finished(session_id: str, output: str) -> str:
    fields = {"attempt": 1, "status": "succeeded", "output": output, "error": ""}
    return frame("task.finished", session_id=session_id, **fields)


def mark_silent(name: str) -> None:
    Node.objects.filter(name=name).update(healthy=False, status=Node.Status.NOT_READY)


HEARTBEAT = frame(
    "heartbeat", running=1, cpu=12.5, mem=40.0, peak=1, free_memory_mb=2048, free_disk_mb=9000
)


async def receive(communicator: WebsocketCommunicator) -> dict[str, Any]:
    return json.loads(await communicator.receive_from(timeout=WAIT))


async def say_hello(communicator: WebsocketCommunicator) -> dict[str, Any]:
    """Hello; returns the welcome (the node.config that follows it is checked and dropped)."""
    await communicator.send_to(text_data=hello())
    welcome = await receive(communicator)
    if welcome["type"] == "welcome":
        assert (await receive(communicator))["type"] == "node.config"
    return welcome


async def test_it_refuses_a_bad_token_at_the_handshake(connect: Connect, token: str) -> None:
    await connect("not-the-token", expect=False)


async def test_it_refuses_a_handshake_without_a_token(connect: Connect, token: str) -> None:
    await connect("", expect=False)


async def test_it_welcomes_a_node_that_says_hello_and_marks_it_ready(
    runtime: Runtime, connect: Connect, token: str
) -> None:
    await runtime.write(mark_silent, "n1")
    communicator = await connect(token)
    welcome = await say_hello(communicator)
    assert welcome == {
        "type": "welcome",
        "v": protocol.PROTOCOL_VERSION,
        "node": "n1",
        "heartbeat_interval": runtime.cfg["HEARTBEAT_INTERVAL"],
    }
    node = await runtime.write(node_row, "n1")
    assert (node.healthy, node.status, node.version, node.labels) == (
        True,
        "ready",
        "1.0",
        {"zone": "a"},
    )
    assert (node.capabilities, node.models) == (["browser"], ["llama3:8b"])
    await runtime.scheduler.resync()
    info = runtime.scheduler.cluster.node("n1")
    assert (info.capabilities, info.models) == ({"browser"}, {"llama3:8b"})


@pytest.mark.parametrize(
    "before_hello",
    [HEARTBEAT, frame("task.accepted", session_id="s", attempt=1), frame("draining")],
    ids=["heartbeat", "task.accepted", "draining"],
)
async def test_it_wants_hello_before_anything_else(
    connect: Connect, token: str, before_hello: str
) -> None:
    communicator = await connect(token)
    await communicator.send_to(text_data=before_hello)
    reply = await receive(communicator)
    assert (reply["type"], reply["code"]) == ("error", "hello_first")
    assert (await say_hello(communicator))["type"] == "welcome"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("{not json", protocol.INVALID_JSON),
        ("[1, 2]", protocol.NOT_AN_OBJECT),
        ('{"v": 1}', protocol.MISSING_FIELD),
        ('{"type": "heartbeat", "v": 1}', protocol.UNSUPPORTED_VERSION),
        ('{"type": "gossip", "v": 2}', protocol.UNKNOWN_TYPE),
        ('{"type": "node.config", "v": 2}', protocol.WRONG_DIRECTION),
        ('{"type": "heartbeat", "v": 2, "running": 1}', protocol.MISSING_FIELD),
        ('{"type": "draining", "v": 2, "extra": 1}', protocol.UNEXPECTED_FIELD),
    ],
    ids=[
        "not json",
        "not an object",
        "no type",
        "another version",
        "unknown type",
        "a hub frame",
        "a missing field",
        "an extra field",
    ],
)
async def test_it_answers_a_malformed_frame_with_an_error_and_stays_connected(
    connect: Connect, token: str, text: str, code: str
) -> None:
    communicator = await connect(token)
    await communicator.send_to(text_data=text)
    reply = await receive(communicator)
    assert (reply["type"], reply["code"]) == ("error", code)
    assert reply["message"]
    assert (await say_hello(communicator))["type"] == "welcome"


async def test_it_answers_a_binary_frame_with_an_error(connect: Connect, token: str) -> None:
    communicator = await connect(token)
    await communicator.send_to(bytes_data=b"\x00\x01")
    reply = await receive(communicator)
    assert (reply["type"], reply["code"]) == ("error", "bad_frame")


async def test_it_closes_on_a_hello_in_another_nodes_name(connect: Connect, token: str) -> None:
    communicator = await connect(token)
    await communicator.send_to(text_data=hello(name="n2"))
    reply = await receive(communicator)
    assert (reply["type"], reply["code"]) == ("error", "wrong_node")
    closed = await communicator.receive_output(timeout=WAIT)
    assert closed == {"type": "websocket.close", "code": protocol.CLOSE_FORBIDDEN}


async def test_it_keeps_heartbeats_in_memory_until_the_reaper_writes_them(
    runtime: Runtime, connect: Connect, token: str
) -> None:
    communicator = await connect(token)
    await say_hello(communicator)
    await communicator.send_to(text_data=HEARTBEAT)
    await eventually(lambda: "n1" in runtime.heartbeats)
    beat = runtime.heartbeats["n1"]
    assert (beat["running"], beat["cpu"], beat["mem"]) == (1, 12.5, 40.0)
    assert "n1" in runtime.heard and runtime.heard_since(5.0) == ["n1"]
    node = await runtime.write(node_row, "n1")
    assert node.cpu != 12.5  # not written per heartbeat
    # The scheduler decides on the latest figures this process heard, written or not.
    await runtime.scheduler.resync()
    info = runtime.scheduler.cluster.node("n1")
    assert (info.cpu_percent, info.free_memory_mb, info.free_disk_mb) == (12.5, 2048, 9000)
    await Reaper(runtime).tick()
    assert runtime.heartbeats == {}
    node = await runtime.write(node_row, "n1")
    assert (node.cpu, node.mem, node.free_memory_mb, node.free_disk_mb) == (12.5, 40.0, 2048, 9000)


async def test_it_refuses_a_report_on_a_task_not_assigned_to_this_node(
    runtime: Runtime, connect: Connect, token: str
) -> None:
    await runtime.write(ready_node, "n2")
    elsewhere = await runtime.write(bound_task, "n2", running=True)
    communicator = await connect(token)
    await say_hello(communicator)
    await communicator.send_to(text_data=finished(elsewhere, "x"))
    reply = await receive(communicator)
    assert (reply["type"], reply["code"]) == ("error", "not_assigned")
    # The refused result is acknowledged (changed nothing), so the node drops it.
    assert await receive(communicator) == {
        "type": "ack",
        "v": protocol.PROTOCOL_VERSION,
        "session_id": elsewhere,
        "attempt": 1,
    }
    assert (await runtime.write(task_row, elsewhere)).status == "running"


async def test_it_records_an_accepted_then_finished_task_and_acknowledges_it(
    runtime: Runtime, connect: Connect, token: str
) -> None:
    sid = await runtime.write(bound_task, "n1")
    communicator = await connect(token)
    await say_hello(communicator)
    await communicator.send_to(text_data=frame("task.accepted", session_id=sid, attempt=1))
    await communicator.send_to(
        text_data=frame("task.progress", session_id=sid, pct=50.0, message="half way")
    )
    await communicator.send_to(text_data=frame("task.log", session_id=sid, lines=["working"]))
    await communicator.send_to(text_data=finished(sid, "HI"))
    ack = await receive(communicator)
    assert ack == {"type": "ack", "v": protocol.PROTOCOL_VERSION, "session_id": sid, "attempt": 1}
    task = await runtime.write(task_row, sid)
    assert (task.status, task.output, task.progress) == ("succeeded", "HI", 100.0)
    assert (task.message, task.log) == ("half way", ["working"])
    assert task.started_at is not None and task.finished_at is not None
    assert (await runtime.write(node_row, "n1")).running == 0


async def test_it_carries_a_submitted_golem_task_to_the_node_and_back(
    runtime: Runtime, connect: Connect, token: str
) -> None:
    communicator = await connect(token)
    await say_hello(communicator)
    # No waiting for the scheduler's picture: a decision right after the hello must see the
    # node (it looks again at the database when a node change was announced).
    submitted = await runtime.write(
        submission.task_submit, actor=None, agent_id="echo", input="hi", strategy="golem"
    )
    sid = str(submitted.session_id)
    # The runtime routes it, binds it on n1 and sends it through the channel layer.
    assign = await receive(communicator)
    assert assign == {
        "type": "task.assign",
        "v": protocol.PROTOCOL_VERSION,
        "session_id": sid,
        "agent_id": "echo",
        "input": "hi",
        "attempt": 1,
    }
    await communicator.send_to(text_data=frame("task.accepted", session_id=sid, attempt=1))
    # The acceptance answers the dispatcher waiting for it: nobody waits any more.
    await eventually(lambda: not runtime.dispatcher.waiting(sid, 1))
    assert (await runtime.write(task_row, sid)).status == "running"
    await communicator.send_to(text_data=finished(sid, "hi"))
    assert (await receive(communicator))["type"] == "ack"
    task = await runtime.write(task_row, sid)
    assert (task.status, task.route, task.node.name, task.output) == (
        "succeeded",
        "golem",
        "n1",
        "hi",
    )
