"""Frames: the latest state per task and node wins, and the summary read is shared."""

from __future__ import annotations

import asyncio
import time

import pytest

from hivemind_web.dashboard import frames
from hivemind_web.dashboard.summary import SummaryCache


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
