"""Node control reaches the node (DESIGN §14): the hub's word on a node goes out as node.config
after hello and after every operator change, the node's node.state is kept beside the hub's
view, and a node that refuses an assignment is backed off instead of looking empty."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from django.utils import timezone
from runtime_support import WAIT, bound_task, eventually, node_row, pending_task, ready_node
from test_runtime_node_consumer import (  # noqa: F401 - fixtures
    Connect,
    connect,
    frame,
    hello,
    receive,
    runtime,
    token,
)

from executor_core.scheduling.types import ScheduleRequest, SchedulingError
from hivemind_web.hub.execution import reaper as reaper_module
from hivemind_web.hub.execution.reaper import Reaper
from hivemind_web.hub.execution.runtime import Runtime
from hivemind_web.hub.execution.scheduler import read_node
from hivemind_web.hub.intents import AttemptSpec
from hivemind_web.hub.models import Node, NodeEvent, NodeLoadSample, Task
from hivemind_web.hub.services import nodes as node_services

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


def state(generation: int, **changes: object) -> str:
    fields = {"cordoned": False, "draining": False, "stopping": False, "capacity": 2}
    fields |= {"labels": {"zone": "a"}, "running": 0}
    return frame("node.state", generation=generation, **{**fields, **changes})


def node_events(name: str) -> list[tuple[str, dict]]:
    return [(e.kind, e.data) for e in NodeEvent.objects.filter(node__name=name)]


async def welcomed(connect: Connect, token: str):  # noqa: F811
    communicator = await connect(token)
    await communicator.send_to(text_data=hello())
    assert (await receive(communicator))["type"] == "welcome"
    return communicator, await receive(communicator)


async def test_hello_is_answered_with_the_hubs_word_on_the_node(
    runtime: Runtime,  # noqa: F811
    connect: Connect,  # noqa: F811
    token: str,  # noqa: F811
) -> None:
    await runtime.write(node_services.node_update, name="n1", actor="alice", capacity=4)
    await runtime.write(node_services.node_cordon, name="n1", actor="alice")
    _communicator, config = await welcomed(connect, token)
    # The operator's capacity wins over the hello's 2, and the node learns it is cordoned.
    assert config == {
        "type": "node.config",
        "v": 2,
        "generation": 2,
        "cordoned": True,
        "draining": False,
        "capacity": 4,
        "labels": {},
    }


async def test_operator_changes_reach_the_node_and_its_answer_is_recorded(
    runtime: Runtime,  # noqa: F811
    connect: Connect,  # noqa: F811
    token: str,  # noqa: F811
) -> None:
    communicator, config = await welcomed(connect, token)
    first = config["generation"]
    await runtime.write(node_services.node_drain, name="n1", actor="alice")
    # Nothing runs there: the drain is over at once, the node is told drained = cordoned.
    drained = await receive(communicator)
    assert (drained["generation"], drained["draining"]) == (first + 1, True)
    settled = await receive(communicator)
    assert (settled["generation"], settled["draining"], settled["cordoned"]) == (
        first + 2,
        False,
        True,
    )
    await runtime.write(node_services.node_uncordon, name="n1", actor="alice")
    uncordoned = await receive(communicator)
    assert (uncordoned["cordoned"], uncordoned["draining"]) == (False, False)
    await runtime.write(node_services.node_update, name="n1", actor="alice", capacity=4)
    edited = await receive(communicator)
    assert (edited["generation"], edited["capacity"]) == (first + 4, 4)

    await communicator.send_to(text_data=state(first + 4, capacity=4))
    node = await node_when(runtime, lambda n: n.reported.get("generation") == first + 4)
    assert node.reported["capacity"] == 4 and node.reported["stopping"] is False
    assert node.config_generation == first + 4 and "at" in node.reported


async def node_when(hub: Runtime, check: Callable[[Node], bool]) -> Node:
    """n1 once ``check`` holds for its row."""
    found: list[Node] = []

    async def look() -> None:
        node = await hub.write(node_row, "n1")
        if check(node):
            found.append(node)

    deadline = asyncio.get_running_loop().time() + WAIT
    while not found and asyncio.get_running_loop().time() < deadline:
        await look()
        await asyncio.sleep(0.01)
    assert found, "n1 never reached the expected state"
    return found[0]


async def test_a_refusing_node_is_backed_off_until_it_accepts_again(
    runtime: Runtime,  # noqa: F811
    connect: Connect,  # noqa: F811
    token: str,  # noqa: F811
) -> None:
    communicator, _config = await welcomed(connect, token)
    sid = await runtime.write(pending_task)
    runtime.start_attempt(await runtime.write(_spec, sid))
    assign = await receive(communicator)
    assert assign["type"] == "task.assign"
    reason = "at capacity (2/2 running)"
    await communicator.send_to(
        text_data=frame("task.rejected", session_id=sid, attempt=1, reason=reason)
    )
    node = await node_when(runtime, lambda n: n.refusals > 0)
    assert (node.refusals, node.last_refusal) == (1, reason)
    assert node.backoff_until is not None and node.status == "ready"
    events = await runtime.write(node_events, "n1")
    assert ("refused", {"session_id": sid, "reason": reason, "backoff": 1.0}) in events
    # The scheduler's picture: not ready for new work while backed off, so it does not look
    # like an empty node that takes everything.
    assert (await runtime.write(read_node, "n1")).ready is False
    await eventually(lambda: runtime.scheduler.cluster.node("n1").ready is False)
    with pytest.raises(SchedulingError, match="not ready"):
        runtime.scheduler.cluster.evaluate(_request("probe"))

    # It takes work again: the back-off ends with its first acceptance.
    again = await runtime.write(bound_task, "n1")
    await communicator.send_to(text_data=frame("task.accepted", session_id=again, attempt=1))
    node = await node_when(runtime, lambda n: n.refusals == 0)
    assert node.backoff_until is None
    await eventually(lambda: runtime.scheduler.cluster.node("n1").ready is True)


def _spec(sid: str) -> AttemptSpec:
    return AttemptSpec.of(Task.objects.select_related("team").get(session_id=sid))


def _request(sid: str) -> ScheduleRequest:
    return ScheduleRequest(session_id=sid, agent_id="echo")


@pytest.mark.parametrize(
    ("refusals", "seconds"), [(1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (6, 30.0), (40, 30.0)]
)
def test_the_back_off_doubles_per_refusal_up_to_a_bound(refusals: int, seconds: float) -> None:
    assert node_services.backoff_seconds(refusals) == seconds


def _samples() -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in NodeLoadSample.objects.values_list("node__name", flat=True):
        counts[name] = counts.get(name, 0) + 1
    return counts


async def test_every_node_is_sampled_once_per_window_whichever_tick_it_beats_on(
    runtime: Runtime,  # noqa: F811
) -> None:
    names = [f"s{i}" for i in range(reaper_module.SAMPLE_EVERY)]
    for name in names:
        await runtime.write(ready_node, name)
    reaper = Reaper(runtime)
    for window in range(2):
        # Node s<i> beats on tick i of each window only (before, only the beats of the
        # sample tick itself were kept: one node in five got a sample).
        for tick in range(reaper_module.SAMPLE_EVERY):
            beat = {"time": timezone.now(), "running": 0, "cpu": 10.0 * tick, "mem": 5.0}
            runtime.note_heartbeat(names[tick], beat)
            await reaper.tick()
        assert await runtime.write(_samples) == {name: window + 1 for name in names}
