"""A real node process against the scripted hub: announcing itself and running assignments."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from node_support import WAIT, FakeHub

from executor_core import __version__


async def eventually(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Poll ``check`` until it returns something truthy, or fail saying ``what`` never came."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := check()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(0.05)
    return value


async def test_it_says_hello_with_its_labels_capacity_agents_and_capabilities(
    fake_hub: FakeHub, spawn_node
):
    spawn_node(
        fake_hub,
        "--labels",
        "zone=eu,gpu=a100",
        "--agents",
        "echo,sleep",
        "--capabilities",
        "gpu_inference,browser",
        capacity=3,
    )
    hello = await fake_hub.wait_connected()
    assert dict(hello.fields) == {
        "name": "n1",
        "version": __version__,
        "labels": {"zone": "eu", "gpu": "a100"},
        "capacity": 3,
        "agents": ["echo", "sleep"],
        "running": [],
        "capabilities": ["browser", "gpu_inference"],
        "models": [],
    }
    headers = fake_hub.handshakes[-1]
    assert headers["Authorization"] == "Bearer node-token-123"
    assert headers["Origin"] == fake_hub.url
    beat = await fake_hub.wait_for("heartbeat")
    assert beat["running"] == 0 and beat["peak"] == 0
    assert 0 <= beat["cpu"] <= 100 and 0 < beat["mem"] <= 100
    # Host-wide free memory, free disk where the node keeps its state.
    assert beat["free_memory_mb"] > 0 and beat["free_disk_mb"] > 0


async def test_it_runs_echo_and_reports_the_output(fake_hub: FakeHub, spawn_node):
    node = spawn_node(fake_hub)
    await fake_hub.wait_connected()
    await fake_hub.assign("s-echo", "echo", "hello, hive")
    accepted = await fake_hub.wait_for("task.accepted", session_id="s-echo")
    finished = await fake_hub.wait_for("task.finished", session_id="s-echo")
    assert accepted["attempt"] == 1
    assert (finished["status"], finished["output"], finished["error"]) == (
        "succeeded",
        "hello, hive",
        "",
    )
    assert fake_hub.frames.index(accepted) < fake_hub.frames.index(finished)
    # The hub acknowledged it: nothing is left to deliver.
    await eventually(lambda: node.outbox() == [], "the outbox to clear after the ack")
    assert node.stats() == {"peak_running": 1, "started": 1, "finished": 1}


async def test_an_agent_failure_is_reported_with_its_error(fake_hub: FakeHub, spawn_node):
    spawn_node(fake_hub)
    await fake_hub.wait_connected()
    await fake_hub.assign("s-fail", "fail", "the model is on fire")
    finished = await fake_hub.wait_for("task.finished", session_id="s-fail")
    assert finished["status"] == "failed"
    assert finished["error"] == "the model is on fire"


async def test_sleep_reports_rising_progress_coalesced_and_final(fake_hub: FakeHub, spawn_node):
    spawn_node(fake_hub)
    await fake_hub.wait_connected()
    await fake_hub.assign("s-sleep", "sleep", "1")
    finished = await fake_hub.wait_for("task.finished", session_id="s-sleep")
    assert finished["status"] == "succeeded"
    progress = fake_hub.matching("task.progress", session_id="s-sleep")
    pcts = [p["pct"] for p in progress]
    assert len(pcts) >= 3, pcts
    assert pcts == sorted(pcts)
    assert pcts[-1] == 100.0
    # The agent reports 21 times in one second; the node sends at most ~5 a second.
    assert len(pcts) <= 8, pcts
    assert fake_hub.frames.index(progress[-1]) < fake_hub.frames.index(finished)


async def test_an_agent_this_node_does_not_run_is_rejected(fake_hub: FakeHub, spawn_node):
    node = spawn_node(fake_hub, "--agents", "echo")
    await fake_hub.wait_connected()
    await fake_hub.assign("s-x", "sleep", "1")
    rejected = await fake_hub.wait_for("task.rejected", session_id="s-x")
    assert "does not run agent 'sleep'" in rejected["reason"]
    assert not fake_hub.matching("task.accepted")
    assert node.stats()["started"] == 0


async def test_capacity_is_never_exceeded(fake_hub: FakeHub, spawn_node):
    node = spawn_node(fake_hub, capacity=2)
    await fake_hub.wait_connected()
    for sid in ("s1", "s2", "s3"):
        await fake_hub.assign(sid, "sleep", "0.5")
    rejected = await fake_hub.wait_for("task.rejected", session_id="s3")
    assert "at capacity (2/2 running)" in rejected["reason"]
    for sid in ("s1", "s2"):
        finished = await fake_hub.wait_for("task.finished", session_id=sid)
        assert finished["status"] == "succeeded"
    assert not fake_hub.matching("task.accepted", session_id="s3")
    stats = await eventually(lambda: node.stats()["finished"] == 2 and node.stats(), "stats")
    assert stats == {"peak_running": 2, "started": 2, "finished": 2}
    # Freed slots take new work.
    await fake_hub.assign("s4", "echo", "again")
    assert (await fake_hub.wait_for("task.finished", session_id="s4"))["status"] == "succeeded"


async def test_a_repeated_assignment_is_never_run_twice(fake_hub: FakeHub, spawn_node):
    node = spawn_node(fake_hub)
    await fake_hub.wait_connected()
    await fake_hub.assign("s-dup", "sleep", "0.5")
    await fake_hub.wait_for("task.accepted", session_id="s-dup")
    await fake_hub.assign("s-dup", "sleep", "0.5")  # while it runs
    await eventually(
        lambda: len(fake_hub.matching("task.accepted", session_id="s-dup")) == 2, "a second accept"
    )
    await fake_hub.wait_for("task.finished", session_id="s-dup")
    mark = len(fake_hub.frames)
    await fake_hub.assign("s-dup", "sleep", "0.5")  # after it finished: the result again
    again = await fake_hub.wait_for("task.finished", session_id="s-dup", since=mark)
    assert again["status"] == "succeeded"
    assert fake_hub.matching("task.accepted", since=mark, session_id="s-dup")
    assert node.stats()["started"] == 1
    # A new attempt of the same session is a new run.
    await fake_hub.assign("s-dup", "echo", "second try", attempt=2)
    second = await fake_hub.wait_for("task.finished", session_id="s-dup", attempt=2)
    assert second["output"] == "second try"


async def test_a_cancelled_task_stops_and_reports_cancelled(fake_hub: FakeHub, spawn_node):
    node = spawn_node(fake_hub)
    await fake_hub.wait_connected()
    await fake_hub.assign("s-long", "sleep", "60")
    await fake_hub.wait_for("task.accepted", session_id="s-long")
    await fake_hub.send("task.cancel", session_id="s-long")
    finished = await fake_hub.wait_for("task.finished", session_id="s-long", timeout=5)
    assert finished["status"] == "cancelled"
    assert node.stats()["finished"] == 1
    await fake_hub.send("task.cancel", session_id="s-unknown")  # harmless
    await fake_hub.assign("s-after", "echo", "still alive")
    assert (await fake_hub.wait_for("task.finished", session_id="s-after"))["status"] == "succeeded"


def config(generation: int, **changes: Any) -> dict[str, Any]:
    """A node.config frame's fields: the node as spawned (capacity 2, no labels), changed."""
    fields = {"cordoned": False, "draining": False, "capacity": 2, "labels": {}}
    return {"generation": generation, **fields, **changes}


async def test_it_reports_its_own_state_once_welcomed(fake_hub: FakeHub, spawn_node):
    spawn_node(fake_hub, "--labels", "zone=eu", capacity=3)
    state = await fake_hub.wait_for("node.state")
    assert dict(state.fields) == {
        "generation": 0,
        "cordoned": False,
        "draining": False,
        "stopping": False,
        "capacity": 3,
        "labels": {"zone": "eu"},
        "running": 0,
    }


async def test_drain_finishes_running_tasks_and_takes_no_more(fake_hub: FakeHub, spawn_node):
    node = spawn_node(fake_hub)
    await fake_hub.wait_connected()
    await fake_hub.assign("s-run", "sleep", "0.5")
    await fake_hub.wait_for("task.accepted", session_id="s-run")
    await fake_hub.send("node.config", **config(1, draining=True))
    state = await fake_hub.wait_for("node.state", generation=1)
    assert (state["draining"], state["running"]) == (True, 1)
    await fake_hub.assign("s-new", "echo", "too late")
    rejected = await fake_hub.wait_for("task.rejected", session_id="s-new")
    # Said once: the hub writes "node n1 rejected the task: draining".
    assert rejected["reason"] == "draining"
    assert (await fake_hub.wait_for("task.finished", session_id="s-run"))["status"] == "succeeded"
    assert node.proc.poll() is None  # a drained node stays connected until it is stopped


async def test_uncordon_after_a_drain_takes_work_again(fake_hub: FakeHub, spawn_node):
    spawn_node(fake_hub)
    await fake_hub.wait_connected()
    await fake_hub.send("node.config", **config(1, draining=True))
    await fake_hub.wait_for("node.state", generation=1)
    await fake_hub.send("node.config", **config(2, cordoned=True))
    await fake_hub.assign("s-cordoned", "echo", "no")
    assert (
        "cordoned" in (await fake_hub.wait_for("task.rejected", session_id="s-cordoned"))["reason"]
    )
    await fake_hub.send("node.config", **config(3))
    state = await fake_hub.wait_for("node.state", generation=3)
    assert (state["cordoned"], state["draining"]) == (False, False)
    await fake_hub.assign("s-back", "echo", "yes")
    assert (await fake_hub.wait_for("task.finished", session_id="s-back"))["output"] == "yes"


async def test_a_capacity_set_by_the_hub_is_the_one_the_node_enforces(
    fake_hub: FakeHub, spawn_node
):
    spawn_node(fake_hub, capacity=2)
    await fake_hub.wait_connected()
    await fake_hub.send("node.config", **config(1, capacity=4, labels={"gpu": "true"}))
    state = await fake_hub.wait_for("node.state", generation=1)
    assert (state["capacity"], state["labels"]) == (4, {"gpu": "true"})
    for i in range(4):
        await fake_hub.assign(f"s-{i}", "sleep", "5")
    for i in range(4):
        await fake_hub.wait_for("task.accepted", session_id=f"s-{i}")
    await fake_hub.assign("s-5th", "echo", "no room")
    rejected = await fake_hub.wait_for("task.rejected", session_id="s-5th")
    assert "at capacity (4/4 running)" in rejected["reason"]


async def test_hub_error_frames_are_logged_not_fatal(fake_hub: FakeHub, spawn_node):
    node = spawn_node(fake_hub)
    await fake_hub.wait_connected()
    await fake_hub.send(
        "error", code="not_assigned", message="task zz is not assigned to this node"
    )
    await fake_hub.assign("s-ok", "echo", "fine")
    await fake_hub.wait_for("task.finished", session_id="s-ok")
    assert "not_assigned: task zz is not assigned to this node" in node.log()
