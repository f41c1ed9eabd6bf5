"""The runtime's GroupWriter (DESIGN §10): one thread, one connection, everything queued
applied in one transaction (savepoints only once something in it raised), results after
the commit."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import DatabaseError, connection, transaction
from runtime_support import node_row, pending_task, ready_node, task_row

from hivemind_web.hub.execution import writer as writer_module
from hivemind_web.hub.execution.batching import Batched
from hivemind_web.hub.execution.writer import GroupWriter
from hivemind_web.hub.models import Team
from hivemind_web.hub.services import tasks as task_services
from hivemind_web.hub.services.transitions import BIND_NODE_FULL

# The writer works on its own thread and connection: what it writes must really commit. The
# serialized rollback gives the tests after these the rows migrations made (groups, content
# types) back after each flush.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)


class Recorder:
    """A transition with a many-at-once form; every application is noted in ``applied``."""

    def __init__(self, *, many_fails: bool = False) -> None:
        self.applied: list[tuple[str, list[str]]] = []
        self.many_fails = many_fails

    def step(self, *, session_id: str, label: str) -> str:
        self.applied.append(("one", [f"{session_id}{label}"]))
        return f"one:{session_id}{label}"

    def step_many(self, calls: list[dict[str, Any]]) -> list[str]:
        names = [f"{c['session_id']}{c['label']}" for c in calls]
        if self.many_fails:
            Team.objects.create(name="written-by-many")
            raise RuntimeError("the many-at-once form broke")
        self.applied.append(("many", names))
        return [f"many:{name}" for name in names]

    def plain(self) -> str:
        self.applied.append(("plain", []))
        return "plain"

    def table(self) -> dict[Callable[..., Any], Batched]:
        return {self.step: Batched(self.step_many)}


def create_team(name: str) -> str:
    return Team.objects.create(name=name).name


def create_team_then_fail(name: str) -> str:
    Team.objects.create(name=name)
    raise ValueError(f"{name} is refused")


def team_names() -> list[str]:
    return list(Team.objects.values_list("name", flat=True))


_transactions = itertools.count(1)


def outer_transaction() -> int:
    """Which transaction the call runs in: a number tagged on the connection's outermost
    atomic block the first time a call sees it."""
    assert connection.in_atomic_block
    block = connection.atomic_blocks[0]
    if not hasattr(block, "test_number"):
        block.test_number = next(_transactions)
    return block.test_number


async def test_it_applies_calls_in_the_order_they_were_queued(writer: GroupWriter) -> None:
    seen: list[int] = []
    futures = [writer.enqueue(seen.append, i) for i in range(20)]
    await asyncio.gather(*futures)
    assert seen == list(range(20))


async def test_it_applies_everything_queued_together_in_one_transaction(
    writer: GroupWriter,
) -> None:
    futures = [writer.enqueue(outer_transaction) for _ in range(10)]
    transactions = await asyncio.gather(*futures)
    assert len(set(transactions)) == 1
    assert (writer.batches, writer.calls) == (1, 10)


async def test_it_commits_a_huge_backlog_in_steps_of_max_batch(writer: GroupWriter) -> None:
    futures = [writer.enqueue(outer_transaction) for _ in range(writer_module.MAX_BATCH + 1)]
    transactions = await asyncio.gather(*futures)
    assert len(set(transactions[:-1])) == 1 and transactions[-1] != transactions[0]
    assert (writer.batches, writer.calls) == (2, writer_module.MAX_BATCH + 1)


async def test_it_fails_only_the_future_of_the_call_that_failed(writer: GroupWriter) -> None:
    first = writer.enqueue(create_team, "red")
    failing = writer.enqueue(create_team_then_fail, "green")
    last = writer.enqueue(create_team, "blue")
    assert await first == "red"
    with pytest.raises(ValueError, match="green is refused"):
        await failing
    assert await last == "blue"
    assert writer.batches == 1
    # The failed call's savepoint was rolled back; the others committed.
    assert sorted(await writer.run(team_names)) == ["blue", "red"]


async def test_it_hands_several_calls_of_a_batched_transition_to_its_many_form() -> None:
    recorder = Recorder()
    writer = GroupWriter("test-db", batched=recorder.table())
    try:
        futures = [writer.enqueue(recorder.step, session_id=s, label="1") for s in "abc"]
        assert await asyncio.gather(*futures) == ["many:a1", "many:b1", "many:c1"]
    finally:
        writer.close()
    assert recorder.applied == [("many", ["a1", "b1", "c1"])]


async def test_it_applies_a_lone_call_of_a_batched_transition_in_its_many_form_too() -> None:
    recorder = Recorder()
    writer = GroupWriter("test-db", batched=recorder.table())
    try:
        assert await writer.run(recorder.step, session_id="a", label="1") == "many:a1"
    finally:
        writer.close()
    assert recorder.applied == [("many", ["a1"])]


async def test_it_falls_back_to_single_calls_when_the_many_form_raises() -> None:
    recorder = Recorder(many_fails=True)
    writer = GroupWriter("test-db", batched=recorder.table())
    try:
        futures = [writer.enqueue(recorder.step, session_id=s, label="1") for s in "ab"]
        assert await asyncio.gather(*futures) == ["one:a1", "one:b1"]
        # What the many form wrote before it raised was rolled back with it.
        assert await writer.run(team_names) == []
    finally:
        writer.close()
    assert recorder.applied == [("one", ["a1"]), ("one", ["b1"])]


def create_teams(calls: list[dict[str, Any]]) -> list[str]:
    return [Team.objects.create(name=c["session_id"]).name for c in calls]


def named(name: str) -> Callable[..., str]:
    def step(*, session_id: str) -> str:
        raise AssertionError("applied in its many-at-once form")

    step.__name__ = name
    return step


async def test_it_sends_no_savepoint_when_nothing_in_the_batch_raises() -> None:
    teams = named("teams")
    writer = GroupWriter("test-db", batched={teams: Batched(create_teams)})
    sent: list[str] = []

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        sent.append(sql)
        return execute(sql, params, many, context)

    try:
        # On the writer's thread: its connection is the one to watch.
        await writer.run(lambda: connection.execute_wrappers.append(record))
        futures = [writer.enqueue(teams, session_id=name) for name in ("red", "blue")]
        assert await asyncio.gather(*futures) == ["red", "blue"]
        await writer.run(lambda: connection.execute_wrappers.remove(record))
    finally:
        writer.close()
    assert any("INSERT" in sql for sql in sent)
    # The two calls that put the watch on and took it off ran alone, each in a savepoint of
    # its own: the end of the first and the start of the second are all the watch saw.
    assert [sql.split()[0] for sql in sent if "SAVEPOINT" in sql.upper()] == [
        "RELEASE",
        "SAVEPOINT",
    ]


async def test_a_group_that_raises_has_the_batch_applied_again_each_group_in_a_savepoint() -> None:
    recorder = Recorder(many_fails=True)
    teams = named("teams")
    writer = GroupWriter("test-db", batched={**recorder.table(), teams: Batched(create_teams)})
    try:
        futures = [
            writer.enqueue(teams, session_id="red"),
            writer.enqueue(recorder.step, session_id="a", label="1"),
            writer.enqueue(teams, session_id="blue"),
        ]
        assert await asyncio.gather(*futures) == ["red", "one:a1", "blue"]
        assert writer.batches == 1
        # The first pass was rolled back whole: the teams are there once, and nothing the
        # failing many-at-once form wrote is.
        assert sorted(await writer.run(team_names)) == ["blue", "red"]
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("queued", "applied"),
    [
        pytest.param(
            [("a", "1"), ("b", "1"), ("a", "2"), ("c", "1")],
            [("many", ["a1", "b1", "c1"]), ("many", ["a2"])],
            id="a second call on a gathered task goes a level up; other tasks stay below",
        ),
        pytest.param(
            [("a", "1"), ("b", "1"), ("a", "2"), ("b", "2"), ("c", "1"), ("c", "2")],
            [("many", ["a1", "b1", "c1"]), ("many", ["a2", "b2", "c2"])],
            id="each task's second calls are gathered together after all the first ones",
        ),
        pytest.param(
            [("a", "1"), ("b", "1"), "plain", ("c", "1"), ("d", "1")],
            [("many", ["a1", "b1"]), ("plain", []), ("many", ["c1", "d1"])],
            id="a call without a many form applies the gathered ones first",
        ),
        pytest.param(
            [("a", "1"), ("a", "2"), ("a", "3")],
            [("many", ["a1"]), ("many", ["a2"]), ("many", ["a3"])],
            id="calls on one task are never gathered together",
        ),
    ],
)
async def test_it_keeps_each_tasks_calls_in_queue_order_while_batching(
    queued: list[tuple[str, str] | str], applied: list[tuple[str, list[str]]]
) -> None:
    recorder = Recorder()
    writer = GroupWriter("test-db", batched=recorder.table())
    try:
        futures = [
            writer.enqueue(recorder.plain)
            if item == "plain"
            else writer.enqueue(recorder.step, session_id=item[0], label=item[1])
            for item in queued
        ]
        await asyncio.gather(*futures)
    finally:
        writer.close()
    assert recorder.applied == applied
    assert writer.batches == 1


async def test_it_applies_a_batched_transition_called_with_positional_arguments_alone() -> None:
    recorder = Recorder()

    def step(session_id: str, label: str) -> str:
        return recorder.step(session_id=session_id, label=label)

    writer = GroupWriter("test-db", batched={step: Batched(recorder.step_many)})
    try:
        await asyncio.gather(writer.enqueue(step, "a", "1"), writer.enqueue(step, "b", "1"))
    finally:
        writer.close()
    assert recorder.applied == [("one", ["a1"]), ("one", ["b1"])]


async def test_it_binds_several_tasks_on_one_node_together_with_the_real_forms(
    writer: GroupWriter,
) -> None:
    await writer.run(ready_node, "n1", capacity=2)
    sids = [await writer.run(pending_task) for _ in range(3)]
    binds = [
        writer.enqueue(task_services.task_bind, session_id=sid, attempt=1, node_name="n1")
        for sid in sids
    ]
    # The node cannot take all three at once: first come, first served.
    assert await asyncio.gather(*binds) == [True, True, BIND_NODE_FULL]
    statuses = [(await writer.run(task_row, sid)).status for sid in sids]
    assert statuses == ["scheduled", "scheduled", "pending"]
    assert (await writer.run(node_row, "n1")).running == 2


async def test_it_puts_a_call_queued_first_ahead_of_everything_waiting(
    writer: GroupWriter,
) -> None:
    seen: list[str] = []
    inside, release = threading.Event(), threading.Event()

    def blocking() -> None:
        inside.set()
        assert release.wait(5)

    running = writer.enqueue(blocking)
    await asyncio.to_thread(inside.wait, 5)
    # While the writer is busy, task writes queue up; a heartbeat flush jumps them.
    later = [writer.enqueue(seen.append, name) for name in ("bind", "finish")]
    first = writer.enqueue_first(seen.append, "heartbeats")
    release.set()
    await asyncio.gather(running, first, *later)
    assert seen == ["heartbeats", "bind", "finish"]


async def test_it_runs_after_commit_hooks_before_the_caller_hears_the_result(
    writer: GroupWriter,
) -> None:
    loop = asyncio.get_running_loop()
    announced: list[str] = []

    def write_and_announce() -> str:
        Team.objects.create(name="red")
        # As the services announce to the runtime: after commit, onto the loop.
        transaction.on_commit(lambda: loop.call_soon_threadsafe(announced.append, "red"))
        assert announced == []  # not before the commit
        return "written"

    assert await writer.run(write_and_announce) == "written"
    assert announced == ["red"]


async def test_it_never_announces_what_a_failed_call_wrote(writer: GroupWriter) -> None:
    announced: list[str] = []

    def announce_then_fail() -> None:
        transaction.on_commit(lambda: announced.append("lost"))
        raise ValueError("refused")

    failing = writer.enqueue(announce_then_fail)
    fine = writer.enqueue(transaction.on_commit, lambda: announced.append("kept"))
    with pytest.raises(ValueError, match="refused"):
        await failing
    await fine
    assert announced == ["kept"]


async def test_it_numbers_calls_so_a_read_knows_which_writes_it_sees(
    writer: GroupWriter,
) -> None:
    before = writer.seq
    writer.enqueue(create_team, "red")
    assert writer.seq == before + 1
    read_at = writer.seq
    names = writer.enqueue(team_names)
    writer.enqueue(create_team, "blue")
    assert writer.seq == read_at + 2
    # The read (number read_at) sees the write queued before it, not the one after.
    assert await names == ["red"]


async def test_it_runs_callbacks_deferred_from_a_call_on_the_loop_before_the_result(
    writer: GroupWriter,
) -> None:
    loop_thread = threading.get_ident()
    ran_on: list[int] = []
    deferred: list[bool] = []

    def write_and_defer() -> str:
        deferred.append(writer.defer(lambda: ran_on.append(threading.get_ident())))
        assert ran_on == []  # not on the writer's thread, not before the batch is back
        return "written"

    assert await writer.run(write_and_defer) == "written"
    assert deferred == [True]
    assert ran_on == [loop_thread]


async def test_it_refuses_to_defer_from_any_thread_but_its_own(writer: GroupWriter) -> None:
    await writer.run(team_names)  # the writer's thread is up
    assert writer.defer(lambda: None) is False


class Deadlock(DatabaseError):
    """What the PostgreSQL driver raises for a deadlock victim (Django keeps it as cause)."""

    sqlstate = "40P01"


class Refused(DatabaseError):
    sqlstate = "23505"  # a unique violation: trying again cannot help


@pytest.mark.parametrize(
    ("failures", "error", "tries", "succeeds"),
    [
        (1, Deadlock, 2, True),
        (writer_module.RETRIES - 1, Deadlock, writer_module.RETRIES, True),
        # Its own batch's locks keep it losing: the whole batch is rolled back and applied
        # again, the neighbour's write included (once in the end).
        (writer_module.RETRIES, Deadlock, writer_module.RETRIES + 1, True),
        (1, Refused, 1, False),
    ],
    ids=["one deadlock", "deadlocks up to the last try", "batch applied again", "not retryable"],
)
async def test_it_tries_a_call_that_lost_a_deadlock_again_in_a_fresh_savepoint(
    writer: GroupWriter, failures: int, error: type[DatabaseError], tries: int, succeeds: bool
) -> None:
    tried: list[int] = []

    def write() -> str:
        tried.append(len(tried) + 1)
        Team.objects.create(name=f"try-{len(tried)}")
        if len(tried) <= failures:
            raise error("lost")
        return "written"

    neighbour = writer.enqueue(create_team, "red")
    call = writer.enqueue(write)
    if succeeds:
        assert await call == "written"
    else:
        with pytest.raises(error):
            await call
    assert tried == list(range(1, tries + 1))
    assert await neighbour == "red"
    # Each failed try's write was rolled back with its savepoint.
    kept = ["red", f"try-{tries}"] if succeeds else ["red"]
    assert sorted(await writer.run(team_names)) == kept


async def test_a_batch_that_keeps_losing_deadlocks_fails_whole_and_changes_nothing(
    writer: GroupWriter,
) -> None:
    def write() -> str:
        Team.objects.create(name="never")
        raise Deadlock("lost")

    neighbour = writer.enqueue(create_team, "red")
    call = writer.enqueue(write)
    for future in (neighbour, call):
        with pytest.raises(DatabaseError):
            await future
    assert await writer.run(team_names) == []


async def test_a_form_marked_last_goes_after_the_whole_batch_without_cutting_it() -> None:
    recorder = Recorder()

    def read(*, label: str) -> str:
        return label

    def read_many(calls: list[dict[str, Any]]) -> list[str]:
        recorder.applied.append(("last", [c["label"] for c in calls]))
        return [f"saw {len(recorder.applied) - 1} before" for _ in calls]

    table = {**recorder.table(), read: Batched(read_many, lambda kwargs: [], last=True)}
    writer = GroupWriter("test-db", batched=table)
    try:
        results = await asyncio.gather(
            writer.enqueue(recorder.step, session_id="a", label="1"),
            writer.enqueue(read, label="r1"),
            writer.enqueue(recorder.step, session_id="b", label="1"),
            writer.enqueue(read, label="r2"),
        )
    finally:
        writer.close()
    # The steps queued on either side of the reads are still applied together, the reads
    # after them both, together.
    assert recorder.applied == [("many", ["a1", "b1"]), ("last", ["r1", "r2"])]
    assert results[1] == results[3] == "saw 1 before"
    assert writer.batches == 1
