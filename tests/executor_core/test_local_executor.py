"""LocalExecutor: bounded concurrency, a bounded queue, cancellation and reporting."""

from __future__ import annotations

import asyncio

import pytest

from executor_core import (
    AgentContext,
    AgentRegistry,
    AtCapacityError,
    ExecuteRequest,
    ExecutorError,
    LocalExecutor,
    RecordingObserver,
    TaskStatus,
    default_registry,
)


class CountingAgent:
    """Records how many runs overlap."""

    name = "count"

    def __init__(self) -> None:
        self.current = 0
        self.peak = 0
        self.started: list[str] = []

    async def run(self, input: str, ctx: AgentContext) -> str:
        self.current += 1
        self.peak = max(self.peak, self.current)
        self.started.append(ctx.session_id)
        try:
            await asyncio.sleep(0.01)
        finally:
            self.current -= 1
        return input


class GateAgent:
    """Blocks until the test opens the gate; ignores ``ctx`` so only task cancellation stops it."""

    name = "gate"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started: list[str] = []
        self.cancelled: list[str] = []

    async def run(self, input: str, ctx: AgentContext) -> str:
        self.started.append(ctx.session_id)
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled.append(ctx.session_id)
            raise
        return f"done {ctx.session_id}"


class ChattyAgent:
    name = "chatty"

    async def run(self, input: str, ctx: AgentContext) -> str:
        ctx.progress(25, "reading")
        ctx.log("line 1", "line 2")
        ctx.progress(100, "done")
        return "ok"


class RaisingAgent:
    name = "raise"

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    async def run(self, input: str, ctx: AgentContext) -> str:
        raise self.exc


class NumberAgent:
    name = "number"

    async def run(self, input: str, ctx: AgentContext) -> int:
        return 42


def request(session_id: str, agent_id: str = "gate", input: str = "") -> ExecuteRequest:
    return ExecuteRequest(agent_id, session_id, input, strategy="local")


async def settle() -> None:
    """Let every ready task run until it blocks."""
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.mark.parametrize(("concurrency", "runs"), [(1, 5), (3, 10), (4, 4)])
async def test_it_never_runs_more_agents_at_once_than_its_concurrency(concurrency, runs):
    agent = CountingAgent()
    executor = LocalExecutor(agent, concurrency=concurrency)

    results = await asyncio.gather(
        *(executor.execute(request(f"s{i}", "count", str(i))) for i in range(runs))
    )

    assert agent.peak == concurrency
    assert [r.status for r in results] == [TaskStatus.SUCCEEDED] * runs
    assert [r.output for r in results] == [str(i) for i in range(runs)]
    assert agent.started == [f"s{i}" for i in range(runs)]  # first come, first served
    assert executor.running == executor.queued == 0


async def test_it_refuses_a_request_once_the_queue_is_full():
    agent = GateAgent()
    executor = LocalExecutor(agent, concurrency=1, queue_limit=2)
    runs = [asyncio.create_task(executor.execute(request(f"s{i}"))) for i in range(3)]
    await settle()

    with pytest.raises(AtCapacityError) as caught:
        await executor.execute(request("s3"))

    assert str(caught.value) == "local executor at capacity: 2 queued (limit 2)"
    assert (executor.running, executor.queued) == (1, 2)
    agent.gate.set()
    results = await asyncio.gather(*runs)
    assert [r.status for r in results] == [TaskStatus.SUCCEEDED] * 3


async def test_a_free_slot_needs_no_queue_room():
    executor = LocalExecutor(default_registry(entry_points=False), concurrency=1, queue_limit=0)

    result = await executor.execute(request("s1", "echo", "hi"))

    assert (result.status, result.output, result.executor) == (TaskStatus.SUCCEEDED, "hi", "local")


async def test_load_fraction_counts_running_and_queued_runs_against_concurrency():
    agent = GateAgent()
    executor = LocalExecutor(agent, concurrency=2)
    assert executor.load_fraction() == 0.0
    runs = [asyncio.create_task(executor.execute(request(f"s{i}"))) for i in range(3)]
    await settle()

    assert (executor.running, executor.queued) == (2, 1)
    assert executor.load_fraction() == 1.5
    agent.gate.set()
    await asyncio.gather(*runs)
    assert executor.load_fraction() == 0.0


async def test_cancelling_a_queued_run_finishes_it_as_cancelled_without_starting_it():
    agent = GateAgent()
    observer = RecordingObserver()
    executor = LocalExecutor(agent, concurrency=1, observer=observer)
    first = asyncio.create_task(executor.execute(request("s1")))
    second = asyncio.create_task(executor.execute(request("s2")))
    await settle()

    assert executor.cancel("s2") is True
    cancelled = await second

    assert cancelled.status is TaskStatus.CANCELLED
    assert agent.started == ["s1"]
    assert executor.queued == 0
    assert [p["request"].session_id for p in observer.of("started")] == ["s1"]
    agent.gate.set()
    assert (await first).status is TaskStatus.SUCCEEDED


async def test_a_queued_run_withdrawn_returns_pending_without_starting():
    agent = GateAgent()
    observer = RecordingObserver()
    executor = LocalExecutor(agent, concurrency=1, observer=observer)
    first = asyncio.create_task(executor.execute(request("s1")))
    second = asyncio.create_task(executor.execute(request("s2")))
    await settle()

    assert executor.is_queued("s2") and not executor.is_queued("s1")
    assert executor.withdraw("s1") is False  # running: not the queue's any more
    assert executor.withdraw("s2") is True
    withdrawn = await second

    assert (withdrawn.status, withdrawn.details) == (TaskStatus.PENDING, {"withdrawn": True})
    assert agent.started == ["s1"] and executor.queued == 0
    assert "s2" not in [f["result"].session_id for f in observer.of("finished")]
    assert executor.withdraw("s2") is False
    agent.gate.set()
    assert (await first).status is TaskStatus.SUCCEEDED


async def test_cancelling_a_running_run_cancels_its_task_and_frees_the_slot():
    agent = GateAgent()
    executor = LocalExecutor(agent, concurrency=1)
    first = asyncio.create_task(executor.execute(request("s1")))
    second = asyncio.create_task(executor.execute(request("s2")))
    await settle()

    assert executor.cancel("s1") is True
    result = await first

    assert result.status is TaskStatus.CANCELLED
    assert result.error == "cancelled"
    assert agent.cancelled == ["s1"]
    await settle()
    assert agent.started == ["s1", "s2"]  # the queued run took the slot
    agent.gate.set()
    assert (await second).status is TaskStatus.SUCCEEDED


async def test_cancelling_a_sleeping_builtin_stops_it_promptly():
    executor = LocalExecutor(default_registry(entry_points=False))
    run = asyncio.create_task(executor.execute(request("s1", "sleep", "60")))
    await asyncio.sleep(0.05)

    executor.cancel("s1")
    result = await asyncio.wait_for(run, 1)

    assert result.status is TaskStatus.CANCELLED


async def test_cancelling_an_unknown_session_returns_false():
    assert LocalExecutor(GateAgent()).cancel("nope") is False


async def test_a_cancelled_caller_cancels_the_agent_and_frees_the_slot():
    agent = GateAgent()
    observer = RecordingObserver()
    executor = LocalExecutor(agent, concurrency=1, observer=observer)
    running = asyncio.create_task(executor.execute(request("s1")))
    queued = asyncio.create_task(executor.execute(request("s2")))
    await settle()

    running.cancel()
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    with pytest.raises(asyncio.CancelledError):
        await queued

    assert agent.cancelled == ["s1"]
    assert (executor.running, executor.queued) == (0, 0)
    finished = [p["result"] for p in observer.of("finished")]
    assert {(r.session_id, r.status) for r in finished} == {
        ("s1", TaskStatus.CANCELLED),
        ("s2", TaskStatus.CANCELLED),
    }


async def test_progress_and_log_reach_the_observer_between_start_and_finish():
    observer = RecordingObserver()
    executor = LocalExecutor(AgentRegistry([ChattyAgent()]), observer=observer)

    result = await executor.execute(request("s1", "chatty"))

    assert result.status is TaskStatus.SUCCEEDED
    assert observer.names() == ["started", "progress", "log", "progress", "finished"]
    assert observer.of("started")[0]["executor"] == "local"
    assert observer.of("progress") == [
        {"session_id": "s1", "pct": 25.0, "message": "reading"},
        {"session_id": "s1", "pct": 100.0, "message": "done"},
    ]
    assert observer.of("log") == [{"session_id": "s1", "lines": ["line 1", "line 2"]}]
    assert observer.of("finished") == [{"result": result}]


@pytest.mark.parametrize(
    ("exc", "error"),
    [
        (ValueError("bad input"), "bad input"),
        (RuntimeError(), "RuntimeError"),
        (KeyError("model"), "'model'"),
    ],
)
async def test_an_agent_exception_fails_the_run_with_its_message(exc, error):
    executor = LocalExecutor(RaisingAgent(exc))

    result = await executor.execute(request("s1", "raise"))

    assert (result.status, result.error) == (TaskStatus.FAILED, error)
    assert executor.running == 0


async def test_the_fail_builtin_fails_with_its_input():
    executor = LocalExecutor(default_registry(entry_points=False))

    result = await executor.execute(request("s1", "fail", "disk full"))

    assert (result.status, result.error) == (TaskStatus.FAILED, "disk full")


async def test_an_unknown_agent_fails_at_once_naming_the_known_agents():
    observer = RecordingObserver()
    executor = LocalExecutor(default_registry(entry_points=False), observer=observer)

    result = await executor.execute(request("s1", "translate"))

    assert result.status is TaskStatus.FAILED
    assert result.error == "unknown agent 'translate' (known agents: count, echo, fail, sleep)"
    assert observer.names() == ["finished"]


async def test_an_agent_returning_a_non_string_fails():
    result = await LocalExecutor(NumberAgent()).execute(request("s1", "number"))

    assert (result.status, result.error) == (
        TaskStatus.FAILED,
        "agent 'number' returned int, expected str",
    )


async def test_a_session_already_in_flight_is_refused():
    agent = GateAgent()
    executor = LocalExecutor(agent)
    run = asyncio.create_task(executor.execute(request("s1")))
    await settle()

    with pytest.raises(ExecutorError, match="already queued or running"):
        await executor.execute(request("s1"))

    agent.gate.set()
    await run


@pytest.mark.parametrize(("concurrency", "queue_limit"), [(0, 10), (2, -1)])
def test_it_refuses_a_nonsensical_configuration(concurrency, queue_limit):
    with pytest.raises(ValueError):
        LocalExecutor(GateAgent(), concurrency=concurrency, queue_limit=queue_limit)


class PlainChattyAgent:
    """ChattyAgent as a plain ``def``: it runs in a worker thread, its reports on the loop."""

    name = "plain"

    def run(self, input: str, ctx: AgentContext) -> str:
        ctx.progress(25, "reading")
        ctx.log("line 1", "line 2")
        ctx.progress(100, "done")
        return "ok"


async def test_a_plain_def_agent_reports_in_order_from_its_thread():
    observer = RecordingObserver()
    executor = LocalExecutor(AgentRegistry([PlainChattyAgent()]), observer=observer)

    result = await executor.execute(request("s1", "plain"))

    assert (result.status, result.output) == (TaskStatus.SUCCEEDED, "ok")
    assert observer.names() == ["started", "progress", "log", "progress", "finished"]


async def test_cancelling_a_busy_process_agent_kills_its_process():
    import psutil
    from support.plugin_agents import IsolatedBusyAgent

    observer = RecordingObserver()
    executor = LocalExecutor(AgentRegistry([IsolatedBusyAgent()]), observer=observer)
    run = asyncio.create_task(executor.execute(request("s1", "busy-isolated", "600")))
    for _ in range(400):
        if observer.of("log"):
            break
        await asyncio.sleep(0.025)
    pid = int(observer.of("log")[0]["lines"][0].split()[1])
    assert psutil.pid_exists(pid)

    assert executor.cancel("s1")
    result = await asyncio.wait_for(run, 10)

    assert result.status is TaskStatus.CANCELLED
    assert not psutil.pid_exists(pid)
    assert executor.running == 0
