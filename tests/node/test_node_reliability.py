"""Results survive a lost hub and a node restart; a stopping node drains and exits cleanly."""

from __future__ import annotations

import pytest
from node_support import FakeHub
from test_node_runs import eventually

STOPPED = "node stopped before the task finished"


@pytest.mark.slow
async def test_results_finished_while_the_hub_is_down_are_delivered_after_reconnect(
    fake_hub: FakeHub, spawn_node
):
    node = spawn_node(fake_hub)
    await fake_hub.wait_connected()
    await fake_hub.assign("s-away", "sleep", "1")
    await fake_hub.wait_for("task.accepted", session_id="s-away")
    await fake_hub.stop()

    outbox = await eventually(
        node.outbox, "the result to be kept in the outbox while the hub is down"
    )
    assert [(r["session_id"], r["status"]) for r in outbox] == [("s-away", "succeeded")]
    assert not fake_hub.matching("task.finished")

    await fake_hub.start()  # same port
    hello = await fake_hub.wait_connected(2)
    assert hello["running"] == []
    finished = await fake_hub.wait_for("task.finished", session_id="s-away")
    assert (finished["status"], finished["output"]) == ("succeeded", "slept 1.0s")
    await eventually(lambda: node.outbox() == [], "the outbox to clear after the ack")
    assert node.stats()["started"] == 1


@pytest.mark.slow
async def test_a_running_task_is_announced_in_hello_after_reconnect(fake_hub: FakeHub, spawn_node):
    spawn_node(fake_hub)
    await fake_hub.wait_connected()
    await fake_hub.assign("s-long", "sleep", "3")
    await fake_hub.wait_for("task.accepted", session_id="s-long")
    await fake_hub.stop()
    await fake_hub.start()
    hello = await fake_hub.wait_connected(2)
    assert hello["running"] == [{"session_id": "s-long", "attempt": 1}]
    finished = await fake_hub.wait_for("task.finished", session_id="s-long")
    assert finished["status"] == "succeeded"


@pytest.mark.slow
async def test_a_restarted_node_delivers_the_results_it_kept(fake_hub: FakeHub, spawn_node):
    fake_hub.auto_ack = False
    first = spawn_node(fake_hub)
    await fake_hub.wait_connected()
    await fake_hub.assign("s-kept", "echo", "keep me")
    await fake_hub.wait_for("task.finished", session_id="s-kept")
    first.terminate()
    assert await first.wait() == 0
    assert [r["session_id"] for r in first.outbox()] == ["s-kept"]

    fake_hub.auto_ack = True
    mark = len(fake_hub.frames)
    second = spawn_node(fake_hub)
    again = await fake_hub.wait_for("task.finished", session_id="s-kept", since=mark)
    assert again["output"] == "keep me"
    await eventually(lambda: second.outbox() == [], "the outbox to clear after the ack")
    assert second.stats()["started"] == 0  # delivered, not run again


@pytest.mark.slow
async def test_sigterm_drains_running_tasks_and_exits_0(fake_hub: FakeHub, spawn_node):
    node = spawn_node(fake_hub)
    await fake_hub.wait_connected()
    await fake_hub.assign("s-drain", "sleep", "1")
    await fake_hub.wait_for("task.accepted", session_id="s-drain")
    node.terminate()
    await fake_hub.wait_for("draining")
    await fake_hub.assign("s-late", "echo", "no")
    rejected = await fake_hub.wait_for("task.rejected", session_id="s-late")
    assert "shutting down" in rejected["reason"]
    finished = await fake_hub.wait_for("task.finished", session_id="s-drain")
    assert finished["status"] == "succeeded"
    assert await node.wait() == 0
    assert node.outbox() == []
    assert node.stats() == {"peak_running": 1, "started": 1, "finished": 1}


@pytest.mark.slow
async def test_tasks_outliving_the_drain_timeout_are_failed(fake_hub: FakeHub, spawn_node):
    node = spawn_node(fake_hub, "--drain-timeout", "0.5")
    await fake_hub.wait_connected()
    await fake_hub.assign("s-stuck", "sleep", "60")
    await fake_hub.wait_for("task.accepted", session_id="s-stuck")
    node.terminate()
    finished = await fake_hub.wait_for("task.finished", session_id="s-stuck", timeout=5)
    assert (finished["status"], finished["error"]) == ("failed", STOPPED)
    assert await node.wait() == 0


async def test_a_stopped_node_with_no_hub_exits_0_and_keeps_nothing(spawn_node):
    node = spawn_node("http://127.0.0.1:9")  # nothing listens: the node keeps retrying
    await eventually(lambda: "reconnecting in" in node.log(), "a reconnection attempt")
    node.terminate()
    assert await node.wait() == 0
    assert node.outbox() == []
