"""The built-in agents: ``echo``, ``sleep``, ``count`` and ``fail`` (smoke tests, demos, drills)."""

from __future__ import annotations

import asyncio
import math

from executor_core.agents.context import AgentContext
from executor_core.types import AgentFailure

MAX_SLEEP = 3600.0
SLEEP_STEPS = 20
# A short sleep takes fewer steps, so a progress report is never more frequent than this.
MIN_STEP = 0.05
ERR_SLEEP_INPUT = "sleep agent: input must be a number of seconds from 0 to {max:g}, got {got!r}"


class EchoAgent:
    """Returns its input."""

    name = "echo"

    async def run(self, input: str, ctx: AgentContext) -> str:
        ctx.progress(100.0)
        return input


class SleepAgent:
    """Sleeps for the number of seconds given as input, reporting progress at every step."""

    name = "sleep"

    def validate_input(self, input: str) -> None:
        parse_seconds(input)

    async def run(self, input: str, ctx: AgentContext) -> str:
        seconds = parse_seconds(input)
        steps = max(1, min(SLEEP_STEPS, int(seconds / MIN_STEP)))
        loop = asyncio.get_running_loop()
        start = loop.time()
        ctx.progress(0.0, f"sleeping {seconds}s")
        for step in range(1, steps + 1):
            # Aim at absolute step times so the total does not drift with scheduling delays.
            await ctx.sleep(start + seconds * step / steps - loop.time())
            message = f"slept {seconds * step / steps:.2f}s of {seconds}s"
            ctx.progress(100.0 * step / steps, message)
            ctx.log(message)
        return f"slept {seconds}s"


def parse_seconds(text: str) -> float:
    """The sleep agent's input as seconds, or a ValueError that says what is expected."""
    try:
        seconds = float(text.strip())
    except (TypeError, ValueError, AttributeError):
        raise ValueError(ERR_SLEEP_INPUT.format(max=MAX_SLEEP, got=text)) from None
    if not math.isfinite(seconds) or not 0.0 <= seconds <= MAX_SLEEP:
        raise ValueError(ERR_SLEEP_INPUT.format(max=MAX_SLEEP, got=text))
    return seconds


MAX_COUNT = 100_000
DEFAULT_COUNT_INTERVAL = 0.1
MAX_COUNT_INTERVAL = 10.0
ERR_COUNT_INPUT = (
    "count agent: input must be 'N' or 'N INTERVAL' (N lines from 1 to {max}, INTERVAL "
    "seconds between them, at most {max_interval:g}), got {got!r}"
)


class CountAgent:
    """Counts from 1 to N, one log line at a time (a demo of a streaming log)."""

    name = "count"

    def validate_input(self, input: str) -> None:
        parse_count(input)

    async def run(self, input: str, ctx: AgentContext) -> str:
        count, interval = parse_count(input)
        for i in range(1, count + 1):
            ctx.log(str(i))
            ctx.progress(100.0 * i / count, f"{i} of {count}")
            if i < count:
                await ctx.sleep(interval)
        return f"counted to {count}"


def parse_count(text: str) -> tuple[int, float]:
    """The count agent's input as (N, interval), or a ValueError saying what is expected."""
    parts = text.split() if isinstance(text, str) else []
    problem = ValueError(
        ERR_COUNT_INPUT.format(max=MAX_COUNT, max_interval=MAX_COUNT_INTERVAL, got=text)
    )
    if len(parts) not in (1, 2):
        raise problem
    try:
        count = int(parts[0])
        interval = float(parts[1]) if len(parts) == 2 else DEFAULT_COUNT_INTERVAL
    except ValueError:
        raise problem from None
    if not 1 <= count <= MAX_COUNT:
        raise problem
    if not (math.isfinite(interval) and 0 <= interval <= MAX_COUNT_INTERVAL):
        raise problem
    return count, interval


class FailAgent:
    """Fails with its input as the error message."""

    name = "fail"

    async def run(self, input: str, ctx: AgentContext) -> str:
        raise AgentFailure(input)


BUILTIN_AGENTS: tuple[type, ...] = (EchoAgent, SleepAgent, CountAgent, FailAgent)
