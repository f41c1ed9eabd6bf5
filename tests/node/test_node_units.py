"""The node agent's parts in process: progress coalescing, hub URLs, backoff, on-disk state."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from executor_core.node import protocol
from executor_core.node.connection import (
    HubURLError,
    backoff_delay,
    check_hub_url,
    hub_endpoint,
    hub_origin,
    hub_ws_url,
)
from executor_core.node.load import ProcessLoad, descendants
from executor_core.node.reporting import MAX_BUFFERED_LINES, RunReporter, clip
from executor_core.node.state import NodeState, Outbox, Stats


class Wire:
    """Collects the frames a reporter sends; ``up`` False plays a lost connection."""

    def __init__(self) -> None:
        self.frames: list[protocol.Message] = []
        self.up = True

    async def send(self, text: str) -> bool:
        if self.up:
            self.frames.append(protocol.parse_frame(text, direction="node"))
        return self.up

    def of(self, type_: str) -> list[protocol.Message]:
        return [f for f in self.frames if f.type == type_]


async def test_progress_is_coalesced_and_the_latest_value_wins() -> None:
    wire = Wire()
    reporter = RunReporter("s1", wire.send, interval=0.2)
    pump = asyncio.create_task(reporter.pump())
    for i in range(1, 1001):
        reporter.on_progress(i / 10, f"step {i}")
        if i % 100 == 0:
            await asyncio.sleep(0.01)  # ~0.1 s of steady reporting
    pump.cancel()
    await reporter.flush()
    pcts = [f["pct"] for f in wire.of("task.progress")]
    assert 1 <= len(pcts) <= 3, pcts
    assert pcts[-1] == 100.0
    assert wire.of("task.progress")[-1]["message"] == "step 1000"


async def test_flush_sends_nothing_new_twice() -> None:
    wire = Wire()
    reporter = RunReporter("s1", wire.send)
    reporter.on_progress(50, "half")
    await reporter.flush()
    await reporter.flush()
    assert len(wire.of("task.progress")) == 1


async def test_log_lines_are_batched_bounded_and_clipped() -> None:
    wire = Wire()
    reporter = RunReporter("s1", wire.send)
    reporter.on_log([f"line {i}" for i in range(MAX_BUFFERED_LINES + 50)])
    reporter.on_log(["x" * 5000])
    await reporter.flush()
    batches = [f["lines"] for f in wire.of("task.log")]
    assert all(len(b) <= protocol.MAX_LOG_LINES for b in batches)
    lines = [line for b in batches for line in b]
    assert lines[0] == "[51 log lines dropped by the node]"
    assert lines[1] == "line 51"
    assert len(lines[-1]) == protocol.MAX_LOG_LINE_CHARS


async def test_what_could_not_be_sent_is_sent_after_resend() -> None:
    wire = Wire()
    reporter = RunReporter("s1", wire.send)
    wire.up = False
    reporter.on_log(["kept"])
    reporter.on_progress(30, "")
    await reporter.flush()
    wire.up = True
    reporter.resend()
    await reporter.flush()
    assert [f.type for f in wire.frames] == ["task.log", "task.progress"]
    assert wire.frames[0]["lines"] == ["kept"]


async def test_reports_from_a_worker_thread_reach_the_loop() -> None:
    wire = Wire()
    reporter = RunReporter("s1", wire.send)
    thread = threading.Thread(target=reporter.on_progress, args=(42.0, "from a thread"))
    thread.start()
    thread.join()
    await asyncio.sleep(0.01)  # the hop to the loop
    await reporter.flush()
    assert wire.of("task.progress")[0]["pct"] == 42.0


def test_clip_marks_what_it_cut() -> None:
    assert clip("abc", 3) == "abc"
    assert clip("abcdef", 4) == "abc…"


@pytest.mark.parametrize(
    ("hub", "ws", "origin"),
    [
        ("http://127.0.0.1:8000", "ws://127.0.0.1:8000/ws/nodes/", "http://127.0.0.1:8000"),
        (
            "https://hive.example.com/",
            "wss://hive.example.com/ws/nodes/",
            "https://hive.example.com",
        ),
        ("https://example.com/hive", "wss://example.com/hive/ws/nodes/", "https://example.com"),
    ],
)
def test_hub_urls_follow_the_hub_base_url(hub: str, ws: str, origin: str) -> None:
    base = check_hub_url(hub)
    assert hub_ws_url(base) == ws
    assert hub_origin(base) == origin
    assert hub_endpoint(base, protocol.REGISTER_PATH).endswith("/api/v1/nodes/register/")


@pytest.mark.parametrize(
    "hub",
    ["127.0.0.1:8000", "ws://h:1", "http://", "http://h:99999", "http://h/?x=1", "http://a@h"],
)
def test_a_hub_url_that_is_not_an_http_base_is_refused(hub: str) -> None:
    with pytest.raises(HubURLError):
        check_hub_url(hub)


def test_backoff_grows_to_its_cap_with_jitter() -> None:
    for failures, step in [(0, 0.5), (1, 1.0), (2, 2.0), (5, 10.0), (100, 10.0)]:
        delays = [backoff_delay(failures, cap=10.0) for _ in range(200)]
        assert all(step / 2 <= d <= step for d in delays), (failures, min(delays), max(delays))
        assert len(set(delays)) > 1  # jittered


def test_the_outbox_survives_a_restart_until_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "n1.outbox.json"
    result = {"session_id": "s1", "attempt": 1, "status": "succeeded", "output": "o", "error": ""}
    Outbox(path).add(result)
    reloaded = Outbox(path)
    assert reloaded.results() == [result]
    assert reloaded.ack(("s1", 1)) == result
    assert reloaded.ack(("s1", 1)) is None
    assert Outbox(path).results() == []


def test_an_unreadable_outbox_is_ignored_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "n1.outbox.json"
    path.write_text("{not json")
    assert len(Outbox(path)) == 0


def test_stats_track_the_peak_of_simultaneous_runs(tmp_path: Path) -> None:
    path = tmp_path / "n1.stats.json"
    stats = Stats(path)
    stats.run_started()
    stats.run_started()
    stats.run_finished()
    stats.run_started()
    assert json.loads(path.read_text()) == {"peak_running": 2, "started": 3, "finished": 1}


def test_a_token_is_stored_privately_and_only_reused_for_its_hub(tmp_path: Path) -> None:
    state = NodeState(tmp_path / "state", "n1")
    state.ensure_directory()
    state.store_token("http://hub:8000", "t0k3n")
    assert state.stored_token("http://hub:8000") == "t0k3n"
    assert state.stored_token("http://other:8000") is None
    assert (state.credentials_path.stat().st_mode & 0o777) == 0o600


def test_process_load_counts_a_busy_child_and_reads_free_disk(tmp_path: Path) -> None:
    load = ProcessLoad(directory=tmp_path)
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        deadline = time.monotonic() + 10
        while child.pid not in descendants(os.getpid()) and time.monotonic() < deadline:
            time.sleep(0.05)
        load.sample()  # the child's baseline
        cpu = 0.0
        while cpu == 0.0 and time.monotonic() < deadline:
            time.sleep(0.2)
            cpu, _mem = load.sample()
        assert 0 < cpu <= 100
    finally:
        child.kill()
        child.wait()
    assert load.free_memory_mb() > 0
    assert load.free_disk_mb() is not None and load.free_disk_mb() > 0
    assert ProcessLoad(directory=tmp_path / "missing").free_disk_mb() is None
