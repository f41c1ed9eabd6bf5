"""The NodeDispatcher (DESIGN §6): a bound task is sent to its node through the channel
layer, naming this process's control channel; the node's acceptance answers the wait, and
no acceptance in time (or a rejection) gives the slot back and tells the node to drop it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from runtime_support import WAIT, bound_task, node_row, ready_node, task_row

from executor_core.executors import DispatchError
from executor_core.scheduling.types import Placement
from executor_core.types import ExecuteRequest, TaskStatus
from hivemind_web.hub.broadcast import node_group
from hivemind_web.hub.execution.dispatcher import ERR_REJECTED, ERR_TIMEOUT, NodeDispatcher
from hivemind_web.hub.execution.writer import GroupWriter
from hivemind_web.hub.services import tasks as task_services

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

CONTROL = "hub.control!test"
TIMEOUT = 0.2


class GroupSends:
    """A stand-in for the channel layer's group_send that keeps what was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self._more = asyncio.Condition()

    async def __call__(self, group: str, message: dict[str, Any]) -> None:
        async with self._more:
            self.sent.append((group, message))
            self._more.notify_all()

    async def wait_for(self, count: int) -> list[tuple[str, dict[str, Any]]]:
        async with self._more:
            await asyncio.wait_for(self._more.wait_for(lambda: len(self.sent) >= count), WAIT)
        return self.sent

    def types(self) -> list[str]:
        return [message["type"] for _group, message in self.sent]


@pytest.fixture
def sends() -> GroupSends:
    return GroupSends()


@pytest.fixture
def dispatcher(writer: GroupWriter, sends: GroupSends) -> NodeDispatcher:
    return NodeDispatcher(
        writer=writer, group_send=sends, timeout=TIMEOUT, reply_to=lambda: CONTROL
    )


@pytest.fixture
async def bound(writer: GroupWriter) -> str:
    """A task scheduled on n1 (its only slot taken), not yet sent."""
    await writer.run(ready_node, "n1", capacity=1)
    return await writer.run(bound_task, "n1")


def request_for(session_id: str, attempt: int = 1) -> ExecuteRequest:
    return ExecuteRequest(
        agent_id="echo",
        session_id=session_id,
        input="hello",
        strategy="golem",
        attempt=attempt,
        model="gpt-4o-mini",
    )


PLACED = Placement(node="n1", score=100.0, reason="least loaded")


def start(dispatcher: NodeDispatcher, session_id: str) -> asyncio.Task[Any]:
    return asyncio.ensure_future(dispatcher.dispatch(PLACED, request_for(session_id)))


async def test_it_sends_the_assignment_to_the_nodes_group_with_reply_to_and_attempt(
    dispatcher: NodeDispatcher, sends: GroupSends, bound: str
) -> None:
    dispatch = start(dispatcher, bound)
    [(group, message)] = await sends.wait_for(1)
    assert group == node_group("n1")
    assert message == {
        "type": "task.assign",
        "session_id": bound,
        "agent_id": "echo",
        "input": "hello",
        "model": "gpt-4o-mini",
        "attempt": 1,
        "reply_to": CONTROL,
    }
    dispatcher.resolve(bound, 1)
    await dispatch


async def test_it_reports_the_task_running_once_the_node_accepts(
    dispatcher: NodeDispatcher, sends: GroupSends, bound: str
) -> None:
    dispatch = start(dispatcher, bound)
    await sends.wait_for(1)
    assert dispatcher.waiting(bound, 1)
    assert dispatcher.resolve(bound, 1) is True
    result = await dispatch
    assert (result.status, result.executor, result.node) == (TaskStatus.RUNNING, "golem", "n1")
    assert not dispatcher.waiting(bound, 1)
    assert sends.types() == ["task.assign"]


@pytest.mark.parametrize(
    ("session_id", "attempt"),
    [("someone-else", 1), ("the-bound-one", 2)],
    ids=["another task", "another attempt"],
)
async def test_it_ignores_answers_nobody_here_waits_for(
    dispatcher: NodeDispatcher, sends: GroupSends, bound: str, session_id: str, attempt: int
) -> None:
    dispatch = start(dispatcher, bound)
    await sends.wait_for(1)
    sid = bound if session_id == "the-bound-one" else session_id
    assert dispatcher.resolve(sid, attempt) is False
    assert dispatcher.waiting(bound, 1)
    dispatcher.resolve(bound, 1)
    assert (await dispatch).status == TaskStatus.RUNNING


async def test_it_unbinds_a_rejected_task_and_fails_the_dispatch(
    writer: GroupWriter, dispatcher: NodeDispatcher, sends: GroupSends, bound: str
) -> None:
    dispatch = start(dispatcher, bound)
    await sends.wait_for(1)
    dispatcher.resolve(bound, 1, rejection="agent echo is not installed")
    with pytest.raises(DispatchError) as raised:
        await dispatch
    assert str(raised.value) == ERR_REJECTED.format(node="n1", reason="agent echo is not installed")
    task = await writer.run(task_row, bound)
    assert (task.status, task.node, task.route_reason) == ("pending", None, "")
    assert (await writer.run(node_row, "n1")).running == 0
    assert sends.sent[-1] == (node_group("n1"), {"type": "task.cancel", "session_id": bound})


async def test_it_unbinds_and_cancels_an_assignment_not_accepted_in_time(
    writer: GroupWriter, dispatcher: NodeDispatcher, sends: GroupSends, bound: str
) -> None:
    with pytest.raises(DispatchError) as raised:
        await dispatcher.dispatch(PLACED, request_for(bound))
    assert str(raised.value) == ERR_TIMEOUT.format(node="n1", timeout=TIMEOUT)
    assert (await writer.run(task_row, bound)).status == "pending"
    assert (await writer.run(node_row, "n1")).running == 0
    assert sends.types() == ["task.assign", "task.cancel"]
    assert not dispatcher.waiting(bound, 1)


async def test_it_keeps_an_acceptance_that_raced_the_timeout(
    writer: GroupWriter, dispatcher: NodeDispatcher, sends: GroupSends, bound: str
) -> None:
    dispatch = start(dispatcher, bound)
    await sends.wait_for(1)
    # The node's acceptance is recorded, but the word of it never reaches this dispatcher.
    assert await writer.run(
        task_services.task_mark_running, session_id=bound, attempt=1, node_name="n1"
    )
    result = await dispatch
    assert (result.status, result.node) == (TaskStatus.RUNNING, "n1")
    assert (await writer.run(task_row, bound)).status == "running"
    assert (await writer.run(node_row, "n1")).running == 1
    assert sends.types() == ["task.assign"]  # never told to drop it


async def test_it_tells_the_node_to_drop_a_task_cancelled_while_it_waited(
    writer: GroupWriter, dispatcher: NodeDispatcher, sends: GroupSends, bound: str
) -> None:
    dispatch = start(dispatcher, bound)
    await sends.wait_for(1)
    await writer.run(task_services.task_cancel, session_id=bound, actor=None)
    with pytest.raises(DispatchError):
        await dispatch
    assert (await writer.run(task_row, bound)).status == "cancelled"
    assert sends.types() == ["task.assign", "task.cancel"]
