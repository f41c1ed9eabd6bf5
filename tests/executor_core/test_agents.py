"""AgentContext and the built-in agents."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from executor_core.agents import AgentContext, AgentFailure, EchoAgent, FailAgent, SleepAgent
from executor_core.types import ExecutionCancelled


class Reports:
    def __init__(self) -> None:
        self.progress: list[tuple[float, str]] = []
        self.logs: list[list[str]] = []

    def context(self, agent_id: str = "sleep", session_id: str = "s-1") -> AgentContext:
        return AgentContext(
            agent_id,
            session_id,
            on_progress=lambda pct, message: self.progress.append((pct, message)),
            on_log=self.logs.append,
        )


class InstantContext(AgentContext):
    """Sleeps take no time, so step counts can be checked for long sleeps."""

    def __init__(self) -> None:
        self.reports = Reports()
        super().__init__(
            "sleep", "s-1", on_progress=lambda p, m: self.reports.progress.append((p, m))
        )
        self.sleeps = 0

    async def sleep(self, seconds: float) -> None:
        self.check_cancelled()
        self.sleeps += 1


# AgentContext


@pytest.mark.parametrize(
    ("calls", "reported"),
    [
        ([(10, "a"), (20, "b")], [(10.0, "a"), (20.0, "b")]),
        ([(-5, "start")], [(0.0, "start")]),
        ([(150, "")], [(100.0, "")]),
        ([(60, "x"), (40, "y")], [(60.0, "x"), (60.0, "y")]),
        ([(60, "x"), (40, "x")], [(60.0, "x")]),
        ([(float("nan"), "still")], [(0.0, "still")]),
    ],
)
def test_progress_is_clamped_and_never_goes_backwards(calls, reported):
    reports = Reports()
    ctx = reports.context()

    for pct, message in calls:
        ctx.progress(pct, message)

    assert reports.progress == reported
    assert ctx.pct == reported[-1][0]


def test_log_passes_lines_as_a_list_and_skips_empty_calls():
    reports = Reports()
    ctx = reports.context()

    ctx.log("one", "two")
    ctx.log()

    assert reports.logs == [["one", "two"]]


def test_a_failing_callback_does_not_fail_the_agent(caplog):
    def broken(*args):
        raise RuntimeError("board is down")

    ctx = AgentContext("echo", "s-1", on_progress=broken, on_log=broken)

    ctx.progress(50)
    ctx.log("line")

    assert ctx.pct == 50
    assert "board is down" in caplog.text


def test_check_cancelled_raises_once_cancelled():
    ctx = AgentContext("echo", "s-1")
    ctx.check_cancelled()

    ctx.cancel()

    assert ctx.cancelled
    with pytest.raises(ExecutionCancelled, match="s-1 was cancelled"):
        ctx.check_cancelled()


async def test_sleep_returns_after_the_delay_when_not_cancelled():
    ctx = AgentContext("echo", "s-1")

    started = time.monotonic()
    await ctx.sleep(0.05)

    assert time.monotonic() - started >= 0.04


async def test_sleep_raises_promptly_when_cancelled_meanwhile():
    ctx = AgentContext("echo", "s-1")
    asyncio.get_running_loop().call_later(0.02, ctx.cancel)

    started = time.monotonic()
    with pytest.raises(ExecutionCancelled):
        await ctx.sleep(30)

    assert time.monotonic() - started < 1


async def test_sleep_raises_at_once_when_already_cancelled():
    ctx = AgentContext("echo", "s-1")
    ctx.cancel()

    with pytest.raises(ExecutionCancelled):
        await ctx.sleep(30)


async def test_cancel_from_another_thread_wakes_a_sleeper():
    ctx = AgentContext("echo", "s-1")
    threading.Timer(0.05, ctx.cancel).start()

    started = time.monotonic()
    with pytest.raises(ExecutionCancelled):
        await ctx.sleep(30)

    assert time.monotonic() - started < 1


# Built-in agents


async def test_echo_returns_its_input():
    assert await EchoAgent().run("hello", AgentContext("echo", "s-1")) == "hello"


async def test_fail_raises_agent_failure_with_its_input():
    with pytest.raises(AgentFailure, match=r"^disk full$"):
        await FailAgent().run("disk full", AgentContext("fail", "s-1"))


@pytest.mark.parametrize("text", ["abc", "", "-1", "3600.5", "nan", "inf", "1e9"])
async def test_sleep_rejects_input_that_is_not_seconds_between_0_and_3600(text):
    with pytest.raises(ValueError, match="number of seconds from 0 to 3600"):
        await SleepAgent().run(text, AgentContext("sleep", "s-1"))


@pytest.mark.parametrize(
    ("text", "steps", "output"),
    [
        ("2", 20, "slept 2.0s"),
        ("3600", 20, "slept 3600.0s"),
        (" 0.5 ", 10, "slept 0.5s"),
        ("0.1", 2, "slept 0.1s"),
        ("0.01", 1, "slept 0.01s"),
        ("0", 1, "slept 0.0s"),
    ],
)
async def test_sleep_reports_progress_at_each_step_of_at_least_50ms(text, steps, output):
    ctx = InstantContext()

    result = await SleepAgent().run(text, ctx)

    assert result == output
    assert ctx.sleeps == steps
    pcts = [pct for pct, _ in ctx.reports.progress]
    assert pcts[1:] == pytest.approx([100 * i / steps for i in range(1, steps + 1)])
    assert pcts[-1] == 100


async def test_sleep_really_sleeps_for_a_short_time():
    reports = Reports()

    started = time.monotonic()
    assert await SleepAgent().run("0.2", reports.context()) == "slept 0.2s"

    assert 0.18 <= time.monotonic() - started < 1
    assert reports.progress[-1][0] == 100


async def test_sleep_stops_promptly_when_cancelled():
    ctx = AgentContext("sleep", "s-1")
    run = asyncio.create_task(SleepAgent().run("60", ctx))
    await asyncio.sleep(0.05)

    started = time.monotonic()
    ctx.cancel()
    with pytest.raises(ExecutionCancelled):
        await run

    assert time.monotonic() - started < 1
    assert ctx.pct < 100
