"""What the hub runtime tests share: rows written through the writer's own connection, and a
short wait for what happens on the loop without a future to await.

The runtime's writer owns a thread and a database connection of its own, so the rows a test
sets up and reads back go through it too: whatever the test sees is what the runtime sees.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping

from hivemind_web.hub.models import Node, Task
from hivemind_web.hub.services import nodes as node_services
from hivemind_web.hub.services import submission
from hivemind_web.hub.services import tasks as task_services

WAIT = 3.0


async def eventually(check: Callable[[], object], timeout: float = WAIT) -> None:
    """Wait until ``check()`` is true: a few milliseconds between looks, ``timeout`` at most."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout:g}s: {check}")
        await asyncio.sleep(0.005)


def ready_node(
    name: str,
    *,
    capacity: int = 2,
    agents: Iterable[str] = ("echo",),
    labels: Mapping[str, str] | None = None,
) -> str:
    """A registered node that said hello (healthy, ready); returns its token."""
    _node, token = node_services.node_create(name=name, labels=labels, capacity=capacity)
    node_services.node_connected(
        name=name, version="1", labels=dict(labels or {}), capacity=capacity, agents=list(agents)
    )
    return token


def pending_task(agent_id: str = "echo", team: str | None = None, input: str = "hi") -> str:
    """A stored golem task nobody started; returns its session id."""
    task = submission.task_submit(
        actor=None, agent_id=agent_id, input=input, strategy="golem", team=team, start=False
    )
    return str(task.session_id)


def bound_task(node: str, *, running: bool = False) -> str:
    """A golem task scheduled on ``node`` (and accepted there when ``running``)."""
    sid = pending_task()
    assert task_services.task_bind(session_id=sid, attempt=1, node_name=node) is True
    if running:
        assert task_services.task_mark_running(session_id=sid, attempt=1, node_name=node)
    return sid


def task_row(session_id: str) -> Task:
    return Task.objects.select_related("node").get(session_id=session_id)


def node_row(name: str) -> Node:
    return Node.objects.get(name=name)
