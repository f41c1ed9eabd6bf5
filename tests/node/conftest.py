"""Fixtures for the node agent's tests: the fake hub and node processes of node_support."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from node_support import TOKEN, FakeHub, NodeProcess, node_command


@pytest.fixture
async def fake_hub() -> AsyncIterator[FakeHub]:
    hub = await FakeHub().start()
    yield hub
    await hub.stop()
    assert not hub.errors, f"the node sent invalid frames: {hub.errors}"


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def spawn_node(tmp_path: Path, state_dir: Path) -> Iterator[Any]:
    """``spawn_node(hub, *extra_flags, name=, capacity=, token=, env=)`` starts a node with
    fast timings; ``token=None`` passes no --token."""
    nodes: list[NodeProcess] = []

    def spawn(
        hub: FakeHub | str,
        *extra: str,
        name: str = "n1",
        capacity: int = 2,
        token: str | None = TOKEN,
        env: dict[str, str] | None = None,
    ) -> NodeProcess:
        url = hub.url if isinstance(hub, FakeHub) else hub
        args = node_command(
            "--hub", url, "--name", name, "--capacity", str(capacity),
            "--state-dir", str(state_dir), "--heartbeat", "0.3", "--max-backoff", "0.5",
            "--log-level", "debug", *extra,
        )  # fmt: skip
        if token is not None:
            args += ["--token", token]
        log_path = tmp_path / f"{name}-{len(nodes)}.log"
        node = NodeProcess(args, state_dir, name, log_path, env or {})
        nodes.append(node)
        return node

    yield spawn
    for node in nodes:
        node.kill()
        print(f"--- log of node {node.name} ---\n{node.log()}")
