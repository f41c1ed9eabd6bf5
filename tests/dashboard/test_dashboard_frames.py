"""Frames: the latest state per task and node wins, and the summary read is shared."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from hivemind_web.dashboard import frames
from hivemind_web.dashboard.summary import SummaryCache
from hivemind_web.hub import broadcast


def task(sid: str, status: str, progress: float = 0.0) -> dict:
    return {"session_id": sid, "status": status, "progress": progress, "output": "big"}


def test_the_latest_state_of_each_task_wins_in_order_of_last_change() -> None:
    buffer = frames.FrameBuffer()
    buffer.add("task", task("a", "running", 10), now=1.0)
    buffer.add("task", task("b", "running", 10), now=1.1)
    buffer.add("task", task("a", "succeeded", 100), now=1.2)
    buffer.add("node", {"name": "n1", "status": "ready"}, now=1.3)
    buffer.add("node", {"name": "n1", "status": "not_ready"}, now=1.4)
    changes = buffer.take()
    assert changes is not None
    assert [(t["session_id"], t["status"]) for t in changes.tasks] == [
        ("b", "running"),
        ("a", "succeeded"),
    ]
    assert "output" not in changes.tasks[0]
    assert changes.nodes == [{"name": "n1", "status": "not_ready"}]
    assert changes.last_event_at == 1.4
    assert buffer.take() is None


def test_a_frame_carries_its_sequence_summary_and_fallback_mode() -> None:
    buffer = frames.FrameBuffer()
    buffer.add("fallback_mode", {"enabled": True, "changed_by": "alice"})
    frame = buffer.take().frame(7, {"tasks_running": 1})
    assert frame == {
        "type": "frame",
        "seq": 7,
        "tasks": [],
        "nodes": [],
        "logs": {},
        "fallback_mode": {"enabled": True, "changed_by": "alice"},
        "summary": {"tasks_running": 1},
    }


def test_unknown_events_are_ignored() -> None:
    buffer = frames.FrameBuffer()
    assert not buffer.add("weather", {"sunny": True})
    assert not buffer.add("task", {"no": "session id"})
    assert buffer.take() is None


def test_log_lines_are_kept_in_order_up_to_a_bound() -> None:
    buffer = frames.FrameBuffer()
    buffer.add_log("a", list(range(frames.MAX_FRAME_LOG_LINES)))
    buffer.add_log("a", ["last"])
    lines = buffer.take().logs["a"]
    assert len(lines) == frames.MAX_FRAME_LOG_LINES and lines[0] == "1" and lines[-1] == "last"


def test_too_many_changed_tasks_overflow_into_a_snapshot() -> None:
    buffer = frames.FrameBuffer()
    for i in range(frames.MAX_FRAME_TASKS + 1):
        buffer.add("task", task(str(i), "pending"))
    assert buffer.take().overflow


@pytest.mark.parametrize(("now", "wait"), [(10.05, 0.05), (10.03, 0.07), (10.099, 0.001)])
def test_frames_go_out_on_shared_ticks(now: float, wait: float) -> None:
    assert frames.next_tick(now) == pytest.approx(wait, abs=1e-6)


@pytest.mark.django_db  # the read goes through database_sync_to_async, which tidies connections
async def test_one_summary_read_serves_every_frame_whose_events_came_before_it() -> None:
    calls = []

    def load() -> dict:
        calls.append(1)
        return {"n": len(calls)}

    cache = SummaryCache(load)
    before = time.monotonic() - 1
    results = await asyncio.gather(*(cache.get(before) for _ in range(20)))
    assert results == [{"n": 1}] * 20 and len(calls) == 1
    # An event after that read needs a new one.
    assert await cache.get(time.monotonic()) == {"n": 2}


def test_an_encoded_frame_is_the_frame_as_json() -> None:
    buffer = frames.FrameBuffer()
    buffer.add("task", {"session_id": "a", "status": "running", "output": "x" * 10})
    buffer.add("task", {"session_id": "b", "status": "pending", "message": 'é "quoted"'})
    buffer.add("node", {"name": "n1", "status": "ready"})
    frame = buffer.take().frame(3, {"tasks_running": 1})
    assert json.loads(frames.encode_frame(frame)) == frame
    empty = frames.FrameBuffer()
    empty.add("node", {"name": "n1", "status": "ready"})
    assert json.loads(frames.encode_frame(empty.take().frame(4, None)))["tasks"] == []


def test_clients_given_the_same_event_share_its_board_form_and_text() -> None:
    shared = frames.SharedTasks(limit=3)
    event = {"session_id": "a", "status": "running", "output": "big"}
    lean = shared.lean(event)
    assert shared.lean(event) is lean and "output" not in lean
    assert shared.text(lean) is shared.text(lean)
    # An equal but distinct event (another layer's copy) is trimmed on its own.
    assert shared.lean(dict(event)) is not lean
    for i in range(3):  # past the limit the memo starts over
        shared.lean({"session_id": str(i)})
    assert shared.lean(event) is not lean
    assert shared.lean(event) == lean


@pytest.mark.parametrize(
    ("now", "delay"),
    [
        (10.00, 0.08),  # just after a tick: flush 20 ms before the next one
        (10.07, 0.01),
        (10.079, 0.001 + 0.1),  # too close to make it: the tick after
        (10.085, 0.095),
    ],
)
def test_the_outbox_publishes_just_before_the_boards_next_tick(now: float, delay: float) -> None:
    assert broadcast.publish_delay(now) == pytest.approx(delay, abs=1e-6)
    assert broadcast.PUBLISH_LEAD < frames.FRAME_INTERVAL == broadcast.BOARD_TICK
