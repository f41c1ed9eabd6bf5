"""The ProgressCoalescer (DESIGN §4): a chatty agent's reports become at most one write per
flush interval, the latest figures winning and every log line kept; a task's pending
figures can be written at once, ahead of what is queued after them (its end)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from runtime_support import bound_task, eventually, ready_node, task_row

from hivemind_web.hub.execution.progress import ProgressCoalescer
from hivemind_web.hub.execution.writer import GroupWriter
from hivemind_web.hub.services import tasks as task_services

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

SHORT = 0.05
NEVER = 3600.0


@pytest.fixture
async def running(writer: GroupWriter) -> str:
    """A task running on node n1."""
    await writer.run(ready_node, "n1")
    return await writer.run(bound_task, "n1", running=True)


async def figures(writer: GroupWriter, session_id: str) -> tuple[float, str, list[str]]:
    task = await writer.run(task_row, session_id)
    return task.progress, task.message, list(task.log)


async def until_written(writer: GroupWriter, session_id: str, pct: float) -> None:
    """Wait until the task's progress reads ``pct`` (each look is a read on the writer)."""
    deadline = asyncio.get_running_loop().time() + 3.0
    while (await figures(writer, session_id))[0] != pct:
        assert asyncio.get_running_loop().time() < deadline, f"progress never reached {pct}"
        await asyncio.sleep(0.005)


async def test_it_writes_several_reports_within_the_interval_once_latest_figures_and_all_lines(
    writer: GroupWriter, running: str
) -> None:
    coalescer = ProgressCoalescer(writer, SHORT)
    before = writer.calls
    coalescer.add(running, pct=10, message="loading", lines=["one"], node="n1")
    coalescer.add(running, pct=40, message="thinking", lines=["two", "three"], node="n1")
    coalescer.add(running, lines=["four"], node="n1")  # a log line alone keeps the figures
    await eventually(lambda: writer.calls > before)
    assert writer.calls == before + 1
    assert await figures(writer, running) == (40.0, "thinking", ["one", "two", "three", "four"])


async def test_it_writes_reports_of_a_later_interval_in_a_write_of_their_own(
    writer: GroupWriter, running: str
) -> None:
    coalescer = ProgressCoalescer(writer, SHORT)
    coalescer.add(running, pct=10, lines=["one"], node="n1")
    await until_written(writer, running, 10.0)
    before = writer.calls
    coalescer.add(running, pct=70, message="almost", lines=["two"], node="n1")
    await eventually(lambda: writer.calls > before)
    assert writer.calls == before + 1
    assert await figures(writer, running) == (70.0, "almost", ["one", "two"])


async def test_it_writes_one_tasks_pending_figures_at_once_on_flush_nowait(
    writer: GroupWriter, running: str
) -> None:
    other = await writer.run(bound_task, "n1", running=True)
    coalescer = ProgressCoalescer(writer, NEVER)
    coalescer.add(running, pct=55, message="half", lines=["a"], node="n1")
    coalescer.add(other, pct=20, lines=["b"], node="n1")
    written = await coalescer.flush_nowait(running)
    assert [str(t.session_id) for t in written] == [running]
    assert await figures(writer, running) == (55.0, "half", ["a"])
    # The other task's figures wait for their interval.
    assert await figures(writer, other) == (0.0, "", [])


async def test_it_resolves_flush_nowait_at_once_when_nothing_is_pending(
    writer: GroupWriter, running: str
) -> None:
    coalescer = ProgressCoalescer(writer, NEVER)
    before = writer.seq
    flushed = coalescer.flush_nowait(running)
    assert flushed.done() and flushed.result() is None
    assert writer.seq == before  # nothing was queued


async def test_it_lands_the_last_figures_before_the_end_queued_after_them(
    writer: GroupWriter, running: str
) -> None:
    coalescer = ProgressCoalescer(writer, NEVER)
    coalescer.add(running, pct=90, message="wrapping up", lines=["last words"], node="n1")
    coalescer.flush_nowait(running)
    finished = await writer.run(
        task_services.task_finish,
        session_id=running,
        attempt=1,
        status="succeeded",
        output="done",
        node_name="n1",
    )
    assert finished is not None
    task = await writer.run(task_row, running)
    assert (task.status, task.progress, task.log) == ("succeeded", 100.0, ["last words"])


@pytest.mark.parametrize(
    ("node", "kept"),
    [("n1", True), ("n2", False), (None, False)],
    ids=["from its node", "from another node", "as if local"],
)
async def test_it_drops_reports_from_anywhere_but_where_the_task_runs(
    writer: GroupWriter, running: str, node: str | None, kept: bool
) -> None:
    coalescer = ProgressCoalescer(writer, NEVER)
    coalescer.add(running, pct=30, message="hi", lines=["x"], node=node)
    written = await coalescer.flush_nowait(running)
    assert bool(written) is kept
    expected = (30.0, "hi", ["x"]) if kept else (0.0, "", [])
    assert await figures(writer, running) == expected


async def test_it_writes_a_report_that_arrived_while_the_previous_flush_was_being_written(
    writer: GroupWriter, running: str
) -> None:
    coalescer = ProgressCoalescer(writer, SHORT)
    inside, release = threading.Event(), threading.Event()

    def busy() -> None:  # the database is slow for a moment
        inside.set()
        assert release.wait(5)

    slow = writer.enqueue(busy)
    await asyncio.to_thread(inside.wait, 5)
    queued = writer.seq
    coalescer.add(running, pct=10, message="first", node="n1")
    await eventually(lambda: writer.seq > queued)  # the interval's write is queued, waiting
    coalescer.add(running, pct=20, message="second", node="n1")  # the agent then goes quiet
    release.set()
    await slow

    async def latest() -> str:
        return (await figures(writer, running))[1]

    deadline = asyncio.get_running_loop().time() + 20 * SHORT
    while await latest() != "second" and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(SHORT)
    assert await latest() == "second"
