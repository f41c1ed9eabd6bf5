"""The built-in agents: ``echo``, ``sleep`` and ``fail`` (for smoke tests, demos and drills)."""

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

    async def run(self, input: str, ctx: AgentContext) -> str:
        seconds = parse_seconds(input)
        steps = max(1, min(SLEEP_STEPS, int(seconds / MIN_STEP)))
        loop = asyncio.get_running_loop()
        start = loop.time()
        ctx.progress(0.0, f"sleeping {seconds}s")
        for step in range(1, steps + 1):
            # Aim at absolute step times so the total does not drift with scheduling delays.
            await ctx.sleep(start + seconds * step / steps - loop.time())
            ctx.progress(100.0 * step / steps, f"slept {seconds * step / steps:.2f}s of {seconds}s")
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


class FailAgent:
    """Fails with its input as the error message."""

    name = "fail"

    async def run(self, input: str, ctx: AgentContext) -> str:
        raise AgentFailure(input)


BUILTIN_AGENTS: tuple[type, ...] = (EchoAgent, SleepAgent, FailAgent)
