"""Fixtures of the hub's in-process runtime tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from hivemind_web.hub.execution.batching import BATCHED
from hivemind_web.hub.execution.writer import GroupWriter


@pytest.fixture
async def writer() -> AsyncIterator[GroupWriter]:
    """A writer of the runtime's kind, on its own thread and connection."""
    group_writer = GroupWriter("test-db", batched=BATCHED)
    yield group_writer
    group_writer.close()
