"""Fixtures of the hub's in-process runtime tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.layers import get_channel_layer

from hivemind_web.hub.execution import reaper as reaper_module
from hivemind_web.hub.execution.batching import BATCHED
from hivemind_web.hub.execution.runtime import Runtime, ensure_started, reset_runtime
from hivemind_web.hub.execution.writer import GroupWriter


@pytest.fixture
async def writer() -> AsyncIterator[GroupWriter]:
    """A writer of the runtime's kind, on its own thread and connection."""
    group_writer = GroupWriter("test-db", batched=BATCHED)
    yield group_writer
    group_writer.close()


@pytest.fixture
async def runtime(monkeypatch: pytest.MonkeyPatch, settings: Any) -> AsyncIterator[Runtime]:
    """A started hub runtime whose reaper never ticks, one local slot, long assignments."""
    monkeypatch.setattr(reaper_module, "TICK", 3600.0)  # the tests expire deadlines themselves
    settings.HIVEMIND = {**settings.HIVEMIND, "ASSIGN_TIMEOUT": 60.0, "LOCAL_CONCURRENCY": 1}
    reset_runtime()
    layer = get_channel_layer()
    await layer.flush()
    started = await ensure_started()
    await started.scheduler.ready()
    yield started
    reset_runtime()
    await layer.flush()
