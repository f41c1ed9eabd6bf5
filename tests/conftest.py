"""Shared fixtures: live hub and node processes, and the services CI requires."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.live import (
    REDIS_URL,
    LiveHub,
    NodeProcess,
    create_pg_database,
    drop_pg_database,
    reachable,
)

IN_CI = os.environ.get("CI", "").lower() == "true"


def require_service(name: str, host: str, port: int) -> None:
    """Skip when the service is down locally; under CI=true it is required: fail instead."""
    if reachable(host, port):
        return
    message = f"{name} is not reachable on {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message}, and CI requires it")
    pytest.skip(message)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    url = create_pg_database()
    yield url
    drop_pg_database(url)


@pytest.fixture
def redis_url() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return REDIS_URL


@pytest.fixture
def hub_factory(tmp_path: Path) -> Iterator[Any]:
    hubs: list[LiveHub] = []

    def make(name: str = "hub", **kwargs: Any) -> LiveHub:
        hub = LiveHub(tmp_path / name, **kwargs)
        hubs.append(hub)
        return hub.start()

    yield make
    for hub in hubs:
        hub.stop()


@pytest.fixture
def live_hub(hub_factory: Any) -> LiveHub:
    return hub_factory()


@pytest.fixture
def admin_token(live_hub: LiveHub) -> str:
    return live_hub.create_user("alice", "admin")


@pytest.fixture
def node_factory() -> Iterator[Any]:
    nodes: list[NodeProcess] = []

    def make(hub: LiveHub, name: str, **kwargs: Any) -> NodeProcess:
        node = NodeProcess(hub, name, **kwargs)
        nodes.append(node)
        return node.start()

    yield make
    for node in nodes:
        node.kill()


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    """Rate-limit counters live in the cache: each test starts with none."""
    from django.core.cache import cache

    cache.clear()
    yield
