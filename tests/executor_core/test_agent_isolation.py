"""How agents are called: async on the loop, plain ``def`` in a thread, or in a child process."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import psutil
import pytest

from executor_core.agents import PROCESS, AgentContext, AgentRegistry
from executor_core.agents.isolation import invoke
from executor_core.types import AgentFailure, ExecutionCancelled


class Recorder:
    def __init__(self) -> None:
        self.progress: list[tuple[float, str]] = []
        self.lines: list[str] = []
        self.threads: set[int] = set()

    def context(self, agent_id: str = "a", model: str = "") -> AgentContext:
        def on_progress(pct: float, message: str) -> None:
            self.threads.add(threading.get_ident())
            self.progress.append((pct, message))

        def on_log(lines: list[str]) -> None:
            self.threads.add(threading.get_ident())
            self.lines.extend(lines)

        return AgentContext(agent_id, "s-1", model=model, on_progress=on_progress, on_log=on_log)


# Runners at module level, so a child process can unpickle them.


class PlainAgent:
    """A plain ``def`` that blocks (time.sleep) and reports from its worker thread."""

    name = "plain"

    def run(self, input: str, ctx: AgentContext) -> str:
        for i in range(3):
            time.sleep(0.05)
            ctx.progress(30.0 * (i + 1), f"step {i + 1}")
            ctx.log(f"line {i + 1}")
        return f"{input} from thread {threading.get_ident()}"


class BusyAgent:
    """Never looks at its context: only ending its process stops it."""

    name = "busy"
    isolation = PROCESS

    def run(self, input: str, ctx: AgentContext) -> str:
        ctx.log(f"pid {os.getpid()}")
        end = time.monotonic() + float(input)
        while time.monotonic() < end:
            pass
        return "done"


class ChildAgent:
    """Reports from a child process: progress, log, a print, usage and the model it was given."""

    name = "child"
    isolation = PROCESS

    async def run(self, input: str, ctx: AgentContext) -> str:
        ctx.progress(50.0, "half")
        ctx.log("from the child")
        print("printed", flush=True)
        ctx.record_usage(model=ctx.model, prompt_tokens=3)
        return f"{input}:{os.getpid()}"


class FailingChild:
    name = "failing"
    isolation = PROCESS

    async def run(self, input: str, ctx: AgentContext) -> str:
        raise AgentFailure("it broke in the child")


class DyingChild:
    name = "dying"
    isolation = PROCESS

    def run(self, input: str, ctx: AgentContext) -> str:
        import sys

        sys.stderr.write("fatal: out of cheese\n")
        sys.stderr.flush()
        os._exit(7)


class SlowAgent:
    name = "slow"
    timeout = 0.3

    async def run(self, input: str, ctx: AgentContext) -> str:
        await asyncio.sleep(10)
        return "late"


async def test_a_plain_def_runs_in_a_thread_and_reports_on_the_loop() -> None:
    recorder = Recorder()
    loop_thread = threading.get_ident()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    beat = asyncio.create_task(ticker())
    output = await invoke(PlainAgent(), "hi", recorder.context())
    beat.cancel()
    assert output.startswith("hi from thread ") and output != f"hi from thread {loop_thread}"
    assert ticks >= 5, "the loop kept running while the agent blocked its thread"
    assert recorder.threads == {loop_thread}
    assert recorder.lines == ["line 1", "line 2", "line 3"]
    assert recorder.progress[-1] == (90.0, "step 3")


async def test_a_process_agent_reports_through_its_parent() -> None:
    recorder = Recorder()
    output = await invoke(ChildAgent(), "in", ctx := recorder.context(model="m-1"))
    text, pid = output.split(":")
    assert text == "in" and int(pid) != os.getpid()
    assert recorder.progress == [(50.0, "half")]
    assert sorted(recorder.lines) == ["from the child", "printed"]
    assert ctx.usage == {"model": "m-1", "prompt_tokens": 3}


async def test_the_registry_default_puts_any_agent_in_a_process() -> None:
    registry = AgentRegistry([PlainAgent()], isolation=PROCESS)
    output = await registry.run("x", Recorder().context("plain"))
    assert output.startswith("x from thread ")
    with pytest.raises(ValueError, match="isolation must be one of inline, process"):
        registry.isolation = "container"


@pytest.mark.parametrize(
    ("runner", "message"),
    [
        (FailingChild(), "it broke in the child"),
        (DyingChild(), "'dying' process exited with status 7 before finishing: fatal: out of"),
    ],
)
async def test_a_process_agent_failure_says_why(runner: object, message: str) -> None:
    with pytest.raises(AgentFailure, match=message):
        await invoke(runner, "", Recorder().context())


async def test_a_cancel_ends_a_busy_child_that_ignores_it() -> None:
    recorder = Recorder()
    ctx = recorder.context()
    run = asyncio.create_task(invoke(BusyAgent(), "60", ctx))
    while not recorder.lines:
        await asyncio.sleep(0.05)
    pid = int(recorder.lines[0].split()[1])
    assert psutil.pid_exists(pid)
    ctx.cancel()
    with pytest.raises(ExecutionCancelled):
        await asyncio.wait_for(run, 10)
    assert not psutil.pid_exists(pid)


async def test_cancelling_the_awaiting_task_ends_the_child_at_once() -> None:
    recorder = Recorder()
    run = asyncio.create_task(invoke(BusyAgent(), "60", recorder.context()))
    while not recorder.lines:
        await asyncio.sleep(0.05)
    pid = int(recorder.lines[0].split()[1])
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert not psutil.pid_exists(pid)


async def test_a_timeout_fails_the_run_with_a_message() -> None:
    with pytest.raises(AgentFailure, match=r"agent 'slow' timed out after 0.3s"):
        await invoke(SlowAgent(), "", Recorder().context())


def test_an_unpicklable_agent_cannot_run_in_a_process() -> None:
    class Local:  # not importable from a child
        name = "local"
        isolation = PROCESS

        async def run(self, input: str, ctx: AgentContext) -> str:
            return input

    with pytest.raises(AgentFailure, match="'local' cannot run in a child process"):
        asyncio.run(invoke(Local(), "", AgentContext("local", "s")))


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"isolation": "vm"}, "isolation must be one of inline, process, got 'vm'"),
        ({"timeout": 0}, "timeout must be a positive number of seconds, got 0"),
        ({"timeout": "soon"}, "timeout must be a positive number of seconds, got 'soon'"),
    ],
)
def test_a_runner_with_a_bad_declaration_is_refused_at_registration(attrs, message) -> None:
    runner = type("Declared", (), {"name": "declared", "run": lambda self, i, c: i, **attrs})()
    with pytest.raises(ValueError, match=message):
        AgentRegistry([runner])
