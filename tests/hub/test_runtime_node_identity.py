"""One live connection per node identity (DESIGN §13), on the node WebSocket: a second
connection with the same token is refused with a reason while the first is live; a dead
holder is replaced; a rotated token or a newer connection closes the old one; and reports
from an older connection change nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
import test_runtime_node_consumer as node_socket
from channels.testing import WebsocketCommunicator
from runtime_support import WAIT, bound_task, node_row, task_row
from test_runtime_node_consumer import HEARTBEAT, Connect, finished, receive, say_hello

from executor_core.node import protocol
from hivemind_web.hub.execution import connections
from hivemind_web.hub.execution.runtime import Runtime
from hivemind_web.hub.models import Node
from hivemind_web.hub.services import identity
from hivemind_web.hub.services import tasks as task_services

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

# The node socket's fixtures: a runtime on the test's loop, node n1's token, a connector.
runtime, token, connect = node_socket.runtime, node_socket.token, node_socket.connect


async def refused(communicator: WebsocketCommunicator) -> tuple[dict[str, Any], dict[str, Any]]:
    """The error frame and the close a refused connection gets."""
    error = await receive(communicator)
    closed = await communicator.receive_output(timeout=WAIT)
    return error, closed


def held_by(name: str) -> tuple[int, str]:
    return identity.node_connection(name)


async def test_a_second_connection_of_a_live_node_is_refused_with_a_reason(
    runtime: Runtime, connect: Connect, token: str
) -> None:
    first = await connect(token)
    assert (await say_hello(first))["type"] == "welcome"
    second = await connect(token)
    error, closed = await refused(second)
    assert (error["type"], error["code"]) == ("error", "identity_in_use")
    assert "already has a live connection" in error["message"]
    assert closed["type"] == "websocket.close"
    assert closed["code"] == protocol.CLOSE_CONFLICT
    assert "already has a live connection" in closed["reason"]
    # The first one still holds the identity and is served.
    epoch, channel = await runtime.write(held_by, "n1")
    assert epoch == 1 and channel
    await first.send_to(text_data=HEARTBEAT)
    assert await first.receive_nothing(timeout=0.3)


async def test_the_identity_is_free_again_once_its_connection_closes(
    runtime: Runtime, connect: Connect, token: str
) -> None:
    first = await connect(token)
    await say_hello(first)
    await first.disconnect()
    assert (await runtime.write(held_by, "n1"))[1] == ""
    second = await connect(token)
    assert (await say_hello(second))["type"] == "welcome"
    assert (await runtime.write(held_by, "n1"))[0] == 2


async def test_a_holder_that_does_not_answer_is_replaced(
    runtime: Runtime, connect: Connect, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A connection held by a hub process that died: its channel never answers.
    monkeypatch.setattr(connections, "PROBE_TIMEOUT", 0.2)
    await runtime.write(
        lambda: Node.objects.filter(name="n1").update(
            connection_epoch=7, connection_channel="specific.elsewhere!gone"
        )
    )
    communicator = await connect(token)
    assert (await say_hello(communicator))["type"] == "welcome"
    epoch, channel = await runtime.write(held_by, "n1")
    assert epoch == 8 and channel != "specific.elsewhere!gone"


async def test_a_holder_whose_node_went_silent_is_replaced(
    runtime: Runtime, connect: Connect, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await connect(token)
    await say_hello(first)
    # Nothing heard from its node for longer than the heartbeat grace (a frozen process).
    monkeypatch.setattr(runtime.connections, "idle_limit", 0.0)
    second = await connect(token)
    assert (await say_hello(second))["type"] == "welcome"
    error, closed = await refused(first)
    assert (error["code"], closed["code"]) == ("connection_closed", protocol.CLOSE_CONFLICT)
    assert "newer connection" in error["message"]


async def test_a_rotated_token_closes_the_connection_made_with_the_old_one(
    runtime: Runtime, connect: Connect, token: str
) -> None:
    communicator = await connect(token)
    await say_hello(communicator)
    _node, new_token = await runtime.write(identity.node_rotate_token, name="n1", actor="alice")
    await runtime.connections.verify()  # what the reaper does every tick
    error, closed = await refused(communicator)
    assert (error["code"], closed["code"]) == ("connection_closed", protocol.CLOSE_UNAUTHORIZED)
    assert "rotated" in error["message"]
    await communicator.wait()
    await connect(token, expect=False)  # the old token is refused at the handshake
    fresh = await connect(new_token)
    assert (await say_hello(fresh))["type"] == "welcome"


async def test_a_superseded_connection_is_closed_and_its_reports_count_for_nothing(
    runtime: Runtime, connect: Connect, token: str
) -> None:
    sid = await runtime.write(bound_task, "n1", running=True)
    old = await connect(token)
    await say_hello(old)
    # Another hub's connection took the identity over (its claim moved the epoch on).
    await runtime.write(
        identity.node_claim_connection, name="n1", channel="specific.other!hub", seen_epoch=1
    )
    await old.send_to(text_data=finished(sid, "forged"))  # before this hub noticed
    await runtime.connections.verify()
    outputs = [await old.receive_output(timeout=WAIT)]
    while outputs[-1]["type"] != "websocket.close":
        outputs.append(await old.receive_output(timeout=WAIT))
    assert outputs[-1]["code"] == protocol.CLOSE_CONFLICT
    errors = [json.loads(o["text"]) for o in outputs[:-1] if '"error"' in o["text"]]
    assert [e["code"] for e in errors] == ["connection_closed"]
    task = await runtime.write(task_row, sid)
    assert (task.status, task.output) == ("running", "")


def test_a_report_from_an_older_epoch_is_refused_by_the_service() -> None:
    from runtime_support import ready_node

    ready_node("n1")
    sid = bound_task("n1")
    assert identity.node_claim_connection(name="n1", channel="a!1", seen_epoch=0) == 1
    assert identity.node_claim_connection(name="n1", channel="b!2", seen_epoch=1) == 2
    accepted = task_services.task_mark_running(session_id=sid, attempt=1, node_name="n1", epoch=1)
    assert accepted is False
    assert task_services.task_mark_running(session_id=sid, attempt=1, node_name="n1", epoch=2)
    stale = task_services.task_finish(
        session_id=sid, attempt=1, status="succeeded", output="old", node_name="n1", epoch=1
    )
    assert stale is None and task_row(sid).status == "running"
    done = task_services.task_finish(
        session_id=sid, attempt=1, status="succeeded", output="new", node_name="n1", epoch=2
    )
    assert done is not None and (done.status, done.output) == ("succeeded", "new")
    assert node_row("n1").running == 0


def test_a_claim_loses_to_one_made_since_it_looked() -> None:
    from runtime_support import ready_node

    ready_node("n1")
    assert identity.node_claim_connection(name="n1", channel="a!1", seen_epoch=0) == 1
    assert identity.node_claim_connection(name="n1", channel="b!2", seen_epoch=0) is None
    identity.node_release_connection(name="n1", epoch=0)  # an old epoch releases nothing
    assert identity.node_connection("n1") == (1, "a!1")
    identity.node_release_connection(name="n1", epoch=1)
    assert identity.node_connection("n1") == (1, "")
