"""The runtime's database work: one thread, one long-lived connection, group commit.

Transitions of one task must land in the order they happened (started before progress before
finished), and the hub must not pay a connection, a thread hand-off and a commit for each of
them (DESIGN §10). So every runtime read and write goes to one ``GroupWriter``: a FIFO queue
drained by one dedicated thread that keeps its own connection open. The drain takes
everything queued at once and applies it in ONE transaction, then resolves the callers'
futures after the commit. One failing call must cost only itself; savepoints give that, at
two statements each (on PostgreSQL, two round trips the writer waits for): so a batch is
first applied without them, and only a batch in which something raised is rolled back and
applied again carefully, each call or group of calls in a savepoint of its own. Order is
the queue's; the conditional guards in the services stay the safety net.

Each queued call gets a sequence number (``seq``): a read's result reflects exactly the
writes queued before it, which lets the scheduler reconcile a node snapshot with binds still
in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from django.db import DatabaseError, close_old_connections, connection, transaction

from hivemind_web.hub.services import statements
from hivemind_web.hub.services.retry import retryable

log = logging.getLogger(__name__)

# One transaction holds at most this many calls: a huge backlog still commits in steps, so
# the first callers hear back without waiting for the whole queue.
MAX_BATCH = 500
# A call that lost a deadlock (PostgreSQL picks a victim when two hub processes lock the same
# rows in opposite orders) is rolled back to its savepoint and tried again.
RETRIES = 3
# A call that keeps losing makes the whole batch roll back and apply again, this many times.
BATCH_RETRIES = 5


def retrieve(future: asyncio.Future) -> None:
    """A done-callback for a write nobody may await: its failure reaches whoever does
    await it, and is never logged as "never retrieved"."""
    if not future.cancelled():
        future.exception()


class _BatchDeadlock(Exception):
    """A call kept losing deadlocks to locks its own batch holds: roll the batch back."""


class _Careful(Exception):
    """A group of calls raised in a batch applied without savepoints: roll the batch back
    and apply it again with them."""


class _Call:
    __slots__ = ("args", "fn", "future", "kwargs")

    def __init__(self, fn: Callable[..., Any], args: tuple, kwargs: dict, future: Any):
        self.fn, self.args, self.kwargs, self.future = fn, args, kwargs, future


class GroupWriter:
    """Database calls from the hub loop, in order, group-committed on one connection.

    The writer's thread serves its queue itself: once a batch is committed it hands the
    results to the loop (one callback) and takes the next batch at once, so the database
    never waits for a busy loop to notice a batch ended. The thread is woken at the end of
    the loop step that queued a call, so what one step queues lands in one batch.
    """

    def __init__(
        self, name: str = "hivemind-db", batched: Mapping[Callable, Any] | None = None
    ) -> None:
        # Calls whose function has a many-at-once form here are applied together.
        self.batched = dict(batched or {})
        self.name = name
        self._queue: deque[_Call] = deque()
        self._ready = threading.Condition()  # guards the queue and ``_closing``
        self._thread: threading.Thread | None = None
        self._closing = False
        self._wake_on: asyncio.AbstractEventLoop | None = None  # a wake-up is scheduled there
        self._seq = 0
        # Loop callbacks announced from inside a batch (after its commit): run on the loop
        # with the batch's results, instead of one loop wake-up each.
        self._deferred: list[Callable[[], Any]] = []
        self._ident: int | None = None
        # Figures for the benchmark and the metrics: transactions and calls applied.
        self.batches = 0
        self.calls = 0

    @property
    def seq(self) -> int:
        """The sequence number the next queued call will get."""
        return self._seq + 1

    def enqueue(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> asyncio.Future:
        """Queue ``fn(*args, **kwargs)``; the future resolves with its result after the
        commit. Loop thread only."""
        return self._put(fn, args, kwargs, first=False)

    def enqueue_first(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> asyncio.Future:
        """Queue ``fn`` ahead of everything waiting (heartbeats: never behind task writes).
        Only for calls whose place in the order does not matter."""
        return self._put(fn, args, kwargs, first=True)

    def _put(
        self, fn: Callable[..., Any], args: tuple, kwargs: dict, *, first: bool
    ) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if self._closing:
            future.set_exception(RuntimeError("the hub's database writer is closed"))
            return future
        call = _Call(fn, args, kwargs, future)
        with self._ready:
            self._seq += 1
            if first:
                self._queue.appendleft(call)
            else:
                self._queue.append(call)
        if self._wake_on is not loop:  # (a wake-up on a loop that since ended never comes)
            self._wake_on = loop
            loop.call_soon(self._wake)
        return future

    def _wake(self) -> None:
        self._wake_on = None
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
            self._thread.start()
        with self._ready:
            self._ready.notify()

    def defer(self, fn: Callable[[], Any]) -> bool:
        """From the writer's own thread: run ``fn`` on the loop right after this batch.
        False elsewhere (the caller must hand ``fn`` to the loop itself)."""
        if threading.get_ident() != self._ident:
            return False
        self._deferred.append(fn)
        return True

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await self.enqueue(fn, *args, **kwargs)

    def _serve(self) -> None:
        self._ident = threading.get_ident()
        try:
            while True:
                with self._ready:
                    while not self._queue and not self._closing:
                        self._ready.wait()
                    if not self._queue:
                        return  # closing, and nothing left to write
                    take = min(len(self._queue), MAX_BATCH)
                    batch = [self._queue.popleft() for _ in range(take)]
                try:
                    outcomes = _apply(batch, self.batched)
                except BaseException as exc:  # a bug: fail the batch, keep serving
                    log.exception("hub write batch of %d crashed", len(batch))
                    error = exc if isinstance(exc, Exception) else RuntimeError(str(exc))
                    outcomes = [(False, error)] * len(batch)
                deferred, self._deferred = self._deferred, []
                _hand_back(batch, outcomes, deferred, self)
        finally:
            with contextlib.suppress(Exception):
                connection.close()

    def close(self) -> None:
        """Write what is queued, close the thread's connection and stop the thread (tests,
        shutdown)."""
        with self._ready:
            self._closing = True
            self._ready.notify()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)


def _hand_back(
    batch: list[_Call],
    outcomes: list[tuple[bool, Any]],
    deferred: list[Callable[[], Any]],
    writer: GroupWriter,
) -> None:
    """Resolve the batch's futures on their loop (after its after-commit callbacks)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Call, tuple[bool, Any]]]] = {}
    for call, outcome in zip(batch, outcomes, strict=True):
        by_loop.setdefault(call.future.get_loop(), []).append((call, outcome))
    first = True
    for loop, results in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting
            loop.call_soon_threadsafe(_resolve, results, deferred, writer, first)
        deferred, first = [], False  # run and counted once, on the first loop


def _resolve(
    results: list[tuple[_Call, tuple[bool, Any]]],
    deferred: list[Callable[[], Any]],
    writer: GroupWriter,
    count: bool,
) -> None:
    if count:
        writer.batches += 1
    writer.calls += len(results)
    for fn in deferred:
        try:
            fn()
        except Exception:
            log.exception("after-commit callback failed")
    for call, (ok, value) in results:
        if call.future.done():
            continue
        if ok:
            call.future.set_result(value)
        else:
            call.future.set_exception(value)


def _apply(batch: list[_Call], batched: Mapping[Callable, Any]) -> list[tuple[bool, Any]]:
    """Run a batch in one transaction on this thread's connection (kept open between
    batches); one call's failure rolls back only its own savepoint.

    Calls with a many-at-once form are gathered per function and applied together, in
    levels: a call goes one level above the last gathered call on any of its tasks, and the
    levels are applied in order, so each task's calls still land in queue order (its
    progress before its end) while calls on different tasks share statements. A call
    without such a form first applies everything gathered, so a read sees every write
    queued before it. A form marked ``last`` (the wait queue's reads and claims) is applied
    after everything else in the batch instead: it sees every write of the batch, and does
    not cut the batch in two.
    """
    outcomes: list[tuple[bool, Any]] = [(False, None)] * len(batch)
    levels: list[dict[Callable, list[int]]] = []
    level_of: dict[Any, int] = {}  # task → the level of its last gathered call
    careful = False  # each group of gathered calls in a savepoint of its own

    def single(i: int) -> None:
        call = batch[i]
        for attempt in range(1, RETRIES + 1):
            try:
                with transaction.atomic():
                    outcomes[i] = (True, call.fn(*call.args, **call.kwargs))
                return
            except Exception as exc:
                if attempt < RETRIES and retryable(exc):
                    continue  # our savepoint's locks are gone: the other side can finish
                if retryable(exc):
                    # The locks that keep losing are the batch's own earlier ones: give them
                    # all back and apply the whole batch again.
                    raise _BatchDeadlock from exc
                log.exception("hub write %s failed", getattr(call.fn, "__name__", call.fn))
                outcomes[i] = (False, exc)
                return

    def apply_group(fn: Callable, indexes: list[int]) -> None:
        calls = [batch[i].kwargs for i in indexes]
        if not careful:
            try:
                results = batched[fn].many(calls)
            except Exception as exc:
                raise _Careful from exc
        else:
            try:
                with transaction.atomic():
                    results = batched[fn].many(calls)
            except Exception:
                log.exception("hub batch of %d %s failed; one by one", len(indexes), fn.__name__)
                for i in indexes:
                    single(i)
                return
        for i, result in zip(indexes, results, strict=True):
            # A many-at-once form refuses one call by returning what it would raise.
            outcomes[i] = (not isinstance(result, Exception), result)

    def apply_gathered() -> None:
        for groups in levels:
            for fn, indexes in groups.items():
                apply_group(fn, indexes)
        levels.clear()
        level_of.clear()

    def apply_all() -> None:
        with statements.pinned(), transaction.atomic():
            last: dict[Callable, list[int]] = {}  # forms that go after everything else
            for i, call in enumerate(batch):
                form = batched.get(call.fn)
                keys = form.sessions(call.kwargs) if form is not None and not call.args else None
                if keys is None:
                    apply_gathered()
                    single(i)
                    continue
                if form.last:
                    last.setdefault(call.fn, []).append(i)
                    continue
                level = 1 + max((level_of.get(k, -1) for k in keys), default=-1)
                if level == len(levels):
                    levels.append({})
                levels[level].setdefault(call.fn, []).append(i)
                for key in keys:
                    level_of[key] = level
            apply_gathered()
            for fn, indexes in last.items():
                apply_group(fn, indexes)

    def forget() -> None:
        # Rolled back whole, after-commit hooks included: nothing of it happened.
        levels.clear()
        level_of.clear()
        outcomes[:] = [(False, None)] * len(batch)

    try:
        attempt = 1
        while True:
            try:
                apply_all()
                break
            except _Careful:
                forget()
                careful = True  # again, each group in a savepoint of its own
            except _BatchDeadlock as exc:
                forget()
                attempt += 1
                if attempt > BATCH_RETRIES:
                    raise exc.__cause__ from None
                log.warning("hub write batch of %d lost a deadlock; applying it again", len(batch))
                time.sleep(random.uniform(0.005, 0.05) * attempt)
    except DatabaseError as exc:
        # The commit (or the connection) failed: nothing of the batch is durable. Drop the
        # connection so the next batch opens a fresh one.
        log.exception("hub write batch of %d failed", len(batch))
        close_old_connections()
        return [(False, exc)] * len(batch)
    return outcomes
