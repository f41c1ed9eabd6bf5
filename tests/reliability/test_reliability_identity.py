"""Node identity with real processes (DESIGN §13): the takeover sequence is refused and the
real node keeps working; a rotated token works and the old one is refused; two processes
sharing one identity never both run a task."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from helpers import submit, wait_task
from support.live import wait_for
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

pytestmark = pytest.mark.slow


def ws_url(hub: Any) -> str:
    return hub.url.replace("http://", "ws://") + "/ws/nodes/"


def handshake_status(hub: Any, token: str) -> int:
    """101 when the hub accepts a connection with ``token``, else the HTTP status."""

    async def attempt() -> int:
        try:
            async with connect(
                ws_url(hub), origin=hub.url, additional_headers={"Authorization": f"Bearer {token}"}
            ):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    return asyncio.run(attempt())


def test_the_takeover_sequence_is_refused_and_the_real_node_keeps_working(
    hub_factory: Any, node_factory: Any
) -> None:
    hub = hub_factory()
    token = hub.create_user("alice", "admin")
    honest = node_factory(hub, "honest", capacity=1)
    honest.wait_ready(token)
    # Mallory holds the shared join token and registers the real node's name.
    status, body = hub.api(
        "POST",
        "/api/v1/nodes/register/",
        body={"join_token": hub.join_token, "name": "honest", "capacity": 8},
    )
    assert status == 409, body
    assert "node_token honest --rotate" in body["detail"]
    task = submit(hub, token, agent_id="echo", input="still mine", strategy="golem")
    done = wait_task(hub, token, task["session_id"], "succeeded")
    assert (done["node"], done["output"]) == ("honest", "still mine")
    assert honest.proc is not None and honest.proc.poll() is None


def test_a_rotated_token_works_and_the_old_one_is_refused(
    hub_factory: Any, node_factory: Any, tmp_path: Path
) -> None:
    hub = hub_factory()
    token = hub.create_user("alice", "admin")
    old = node_factory(hub, "edge", capacity=1)
    old.wait_ready(token)
    stored = (old.state_dir / "edge.json").read_text()
    old_token = stored.split('"token": "')[1].split('"')[0]
    new_token = hub.manage("node_token", "edge", "--rotate").strip()
    # The old connection is closed as unauthorised: the old process stops for good.
    assert old.proc is not None
    assert old.proc.wait(timeout=20) == 1
    assert "rotated" in old.log()
    assert handshake_status(hub, old_token) == 403
    fresh = node_factory(
        hub,
        "edge",
        capacity=1,
        state_dir=tmp_path / "fresh",
        env={"HIVEMIND_NODE_TOKEN": new_token},
    )
    wait_for(lambda: "welcomed by the hub" in fresh.log(), timeout=20, what="the new token in use")
    fresh.wait_ready(token)
    task = submit(hub, token, agent_id="echo", input="rotated", strategy="golem")
    assert wait_task(hub, token, task["session_id"], "succeeded")["node"] == "edge"


def test_two_processes_with_one_identity_run_every_task_exactly_once(
    hub_factory: Any, node_factory: Any, tmp_path: Path
) -> None:
    hub = hub_factory()
    token = hub.create_user("alice", "admin")
    node_token = hub.manage("node_token", "twin", "--capacity", "2").strip()
    env = {"HIVEMIND_NODE_TOKEN": node_token}
    first = node_factory(hub, "twin", capacity=2, state_dir=tmp_path / "a", env=env)
    first.wait_ready(token)
    second = node_factory(hub, "twin", capacity=2, state_dir=tmp_path / "b", env=env)
    wait_for(
        lambda: "refused this connection" in second.log(),
        timeout=20,
        what="the second process to be refused",
    )
    assert "another hivemind-node" in second.log()

    def run_batch(count: int) -> list[dict[str, Any]]:
        sids = [
            submit(hub, token, agent_id="sleep", input="0.2", strategy="golem")["session_id"]
            for _ in range(count)
        ]
        return [wait_task(hub, token, sid, {"succeeded", "failed"}, timeout=60) for sid in sids]

    def started() -> int:
        return first.stats().get("started", 0) + second.stats().get("started", 0)

    done = run_batch(12)
    golem = [t for t in done if t["route"] == "golem"]
    assert golem and all(t["status"] == "succeeded" and t["node"] == "twin" for t in golem)
    assert started() == len(golem)
    assert second.stats().get("started", 0) == 0
    # The first process goes away: the second takes the identity over and does the work.
    first.kill()
    wait_for(lambda: "welcomed by the hub" in second.log(), timeout=30, what="the takeover")
    before = started()
    done = run_batch(6)
    golem = [t for t in done if t["route"] == "golem"]
    assert golem and all(t["status"] == "succeeded" for t in golem)
    assert started() - before == len(golem)
