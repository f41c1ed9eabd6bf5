"""The board stream: who may connect, snapshots, batched and numbered frames, log streams."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from dashboard_users import make_user
from django.contrib.auth.models import AnonymousUser

from hivemind_web.dashboard import frames
from hivemind_web.dashboard.consumers import CLOSE_FORBIDDEN, BoardConsumer
from hivemind_web.hub.broadcast import BOARD_GROUP, next_tick, task_group
from hivemind_web.hub.models import Node, Task

# The consumer reads the database from worker threads: the test data must be committed.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

WAIT = 2.0


@pytest.fixture
async def layer() -> AsyncIterator[Any]:
    channel_layer = get_channel_layer()
    await channel_layer.flush()
    yield channel_layer
    await channel_layer.flush()


@database_sync_to_async
def fleet() -> tuple[Node, Task]:
    node = Node.objects.create(name="alpha", capacity=2, status="ready", healthy=True)
    task = Task.objects.create(agent_id="sleep", strategy="golem", status="running", node=node)
    Task.objects.create(agent_id="echo", strategy="local", status="succeeded", route="local")
    return node, task


async def connect(user: Any, query: str = "tasks=1&history=*") -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(BoardConsumer.as_asgi(), f"/ws/board/?{query}")
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def viewer() -> Any:
    return await database_sync_to_async(make_user)("bob", "viewer")


def event(kind: str, **data: Any) -> dict[str, Any]:
    """One change as the hub's outbox publishes it (a board.events message of one)."""
    return {"type": "board.events", "events": [{"kind": kind, "data": data}]}


def log_lines(sid: str, *lines: str) -> dict[str, Any]:
    return {"type": "task.log", "session_id": sid, "lines": list(lines)}


def task_data(task: Task, **changes: Any) -> dict[str, Any]:
    return {
        "session_id": str(task.session_id), "agent_id": task.agent_id, "status": task.status,
        "node": "alpha", "progress": 0.0, "output": "large", **changes,
    }  # fmt: skip


async def test_anonymous_users_are_refused(layer: Any) -> None:
    communicator = WebsocketCommunicator(BoardConsumer.as_asgi(), "/ws/board/")
    communicator.scope["user"] = AnonymousUser()
    connected, code = await communicator.connect()
    assert (connected, code) == (False, CLOSE_FORBIDDEN)


async def test_users_without_the_view_permission_are_refused(layer: Any) -> None:
    charlie = await database_sync_to_async(make_user)("charlie", None)
    communicator = WebsocketCommunicator(BoardConsumer.as_asgi(), "/ws/board/")
    communicator.scope["user"] = charlie
    connected, _ = await communicator.connect()
    assert not connected


async def test_a_viewer_gets_a_full_snapshot_on_connect(layer: Any) -> None:
    _, task = await fleet()
    communicator = await connect(await viewer(), "tasks=1&status=running&history=*")
    snapshot = await communicator.receive_json_from(WAIT)
    assert (snapshot["type"], snapshot["seq"]) == ("snapshot", 1)
    assert [n["name"] for n in snapshot["nodes"]] == ["alpha"]
    assert [t["session_id"] for t in snapshot["tasks"]["results"]] == [str(task.session_id)]
    assert snapshot["bound"][0]["node"] == "alpha"
    assert snapshot["summary"]["tasks_running"] == 1
    await communicator.disconnect()


async def test_a_burst_of_events_becomes_one_frame_with_the_latest_state(layer: Any) -> None:
    _, task = await fleet()
    communicator = await connect(await viewer())
    await communicator.receive_json_from(WAIT)
    # Just after a tick: the burst has the whole interval to land before the next frame.
    await asyncio.sleep(next_tick(time.monotonic(), frames.FRAME_INTERVAL) + 0.005)
    for pct in range(0, 100, 5):
        await layer.group_send(BOARD_GROUP, event("task", **task_data(task, progress=pct)))
    await layer.group_send(BOARD_GROUP, event("node", name="alpha", status="not_ready"))
    frame = await communicator.receive_json_from(WAIT)
    assert (frame["type"], frame["seq"]) == ("frame", 2)
    assert [(t["session_id"], t["progress"]) for t in frame["tasks"]] == [
        (str(task.session_id), 95)
    ]
    assert "output" not in frame["tasks"][0]
    assert frame["nodes"] == [{"name": "alpha", "status": "not_ready"}]
    assert frame["summary"]["tasks_running"] == 1
    assert await communicator.receive_nothing(frames.FRAME_INTERVAL * 2)
    await communicator.disconnect()


async def test_frames_are_numbered_one_after_another(layer: Any) -> None:
    communicator = await connect(await viewer())
    await communicator.receive_json_from(WAIT)
    seqs = []
    for enabled in (True, False, True):
        await layer.group_send(BOARD_GROUP, event("fallback_mode", enabled=enabled))
        frame = await communicator.receive_json_from(WAIT)
        assert frame["fallback_mode"] == {"enabled": enabled}
        assert "summary" not in frame  # nothing the summary counts changed
        seqs.append(frame["seq"])
    assert seqs == [2, 3, 4]
    await communicator.disconnect()


async def test_a_snapshot_request_applies_new_filters_and_keeps_counting(layer: Any) -> None:
    await fleet()
    communicator = await connect(await viewer())
    first = await communicator.receive_json_from(WAIT)
    assert first["tasks"]["count"] == 2 and "history" in first
    await communicator.send_json_to({"type": "snapshot", "tasks": 1, "status": ["succeeded"]})
    second = await communicator.receive_json_from(WAIT)
    assert second["seq"] == 2 and "history" not in second
    assert [t["agent_id"] for t in second["tasks"]["results"]] == ["echo"]
    assert second["tasks"]["filters"]["status"] == ["succeeded"]
    await communicator.disconnect()


async def test_a_watched_task_streams_its_log_lines(layer: Any) -> None:
    _, task = await fleet()
    sid = str(task.session_id)
    communicator = await connect(await viewer(), f"watch={sid}")
    snapshot = await communicator.receive_json_from(WAIT)
    assert "tasks" not in snapshot
    other = "0b7f3a52-8f7e-4f0e-9a55-7f1c1f7b2f10"
    await layer.group_send(task_group(other), log_lines(other, "x"))
    for lines in (["one", "two"], ["three"]):
        await layer.group_send(task_group(sid), log_lines(sid, *lines))
    frame = await communicator.receive_json_from(WAIT)
    assert frame["logs"] == {sid: ["one", "two", "three"]}
    # Asking for a snapshot without the watch stops the stream.
    await communicator.send_json_to({"type": "snapshot"})
    await communicator.receive_json_from(WAIT)
    await layer.group_send(task_group(sid), log_lines(sid, "4"))
    assert await communicator.receive_nothing(frames.FRAME_INTERVAL * 2)
    await communicator.disconnect()


async def test_bad_messages_get_an_error_and_the_socket_stays_open(layer: Any) -> None:
    communicator = await connect(await viewer())
    await communicator.receive_json_from(WAIT)
    await communicator.send_to(text_data="{not json")
    assert (await communicator.receive_json_from(WAIT))["type"] == "error"
    await communicator.send_json_to({"type": "launch"})
    assert "launch" in (await communicator.receive_json_from(WAIT))["detail"]
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from(WAIT) == {"type": "pong"}
    await communicator.disconnect()


async def test_a_huge_burst_is_answered_with_a_snapshot(layer: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(frames, "MAX_FRAME_TASKS", 3)
    # Long ticks, so the whole burst lands in one interval however slowly it is sent.
    monkeypatch.setattr(frames, "next_tick", lambda now: 0.5)
    await fleet()
    communicator = await connect(await viewer())
    await communicator.receive_json_from(WAIT)
    await asyncio.sleep(0.2)  # let a tick scheduled before the patch took effect pass
    for i in range(5):
        sid = f"00000000-0000-0000-0000-00000000000{i}"
        await layer.group_send(BOARD_GROUP, event("task", session_id=sid, status="pending"))
    message = await communicator.receive_json_from(WAIT)
    assert (message["type"], message["seq"]) == ("snapshot", 2)
    await communicator.disconnect()


async def test_disconnected_clients_leave_their_groups(layer: Any) -> None:
    communicator = await connect(await viewer(), "watch=0b7f3a52-8f7e-4f0e-9a55-7f1c1f7b2f10")
    await communicator.receive_json_from(WAIT)
    await communicator.disconnect()
    await asyncio.sleep(0)
    assert not layer.groups.get(BOARD_GROUP)
    assert not layer.groups.get(task_group("0b7f3a52-8f7e-4f0e-9a55-7f1c1f7b2f10"))


async def test_a_burst_to_many_clients_loses_nothing_and_needs_few_messages(layer: Any) -> None:
    """DESIGN §9: every client ends with the latest state of every task, in far fewer
    messages than events."""
    user = await viewer()
    clients = [await connect(user, "") for _ in range(10)]
    for client in clients:
        await client.receive_json_from(WAIT)
    sids = [f"00000000-0000-0000-0000-{i:012d}" for i in range(50)]
    events = 0
    for step in range(10):
        for sid in sids:
            progress = 100.0 if step == 9 else step * 10.0
            await layer.group_send(BOARD_GROUP, event("task", session_id=sid, progress=progress))
            events += 1
    for client in clients:
        latest: dict[str, float] = {}
        messages = 0
        while len(latest) < len(sids) or set(latest.values()) != {100.0}:
            frame = await client.receive_json_from(WAIT)
            messages += 1
            latest.update({t["session_id"]: t["progress"] for t in frame["tasks"]})
        assert messages < events / 10
        await client.disconnect()
