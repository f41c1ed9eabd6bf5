"""What each way of running an agent costs: inline (async on the loop), a worker thread
(plain ``def``), a child process (``isolation = "process"``), a command agent; and how long a
cancel takes to end an isolated agent that ignores it. Prints figures; asserts nothing.

    .venv/bin/python bench/agents.py [--runs 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.plugin_agents import IsolatedBusyAgent

from executor_core.agents import PROCESS, AgentContext, CommandAgent, EchoAgent
from executor_core.agents.isolation import invoke


class PlainEcho:
    name = "plain-echo"

    def run(self, input: str, ctx: AgentContext) -> str:
        return input


async def timed(runner: object, runs: int, isolation: str = "inline") -> list[float]:
    times = []
    for i in range(runs):
        start = time.perf_counter()
        await invoke(runner, "hi", AgentContext("a", f"s{i}"), isolation=isolation)
        times.append((time.perf_counter() - start) * 1000)
    return times


async def cancel_latency(rounds: int) -> list[float]:
    times = []
    for i in range(rounds):
        lines: list[str] = []
        ctx = AgentContext("busy", f"c{i}", on_log=lines.extend)
        run = asyncio.create_task(invoke(IsolatedBusyAgent(), "600", ctx))
        while not lines:
            await asyncio.sleep(0.01)
        start = time.perf_counter()
        ctx.cancel()
        with contextlib.suppress(Exception):
            await run
        times.append((time.perf_counter() - start) * 1000)
    return times


def show(name: str, times: list[float]) -> None:
    p50 = statistics.median(times)
    p99 = sorted(times)[max(0, int(len(times) * 0.99) - 1)]
    print(f"{name:<28} p50 {p50:8.2f} ms   p99 {p99:8.2f} ms   ({len(times)} runs)")


async def main(runs: int) -> None:
    show("inline async (echo)", await timed(EchoAgent(), runs))
    show("worker thread (plain def)", await timed(PlainEcho(), runs))
    show("child process (echo)", await timed(EchoAgent(), max(5, runs // 5), PROCESS))
    show("command agent (cat)", await timed(CommandAgent("cat", ("cat",)), max(5, runs // 5)))
    show("cancel → isolated agent gone", await cancel_latency(3))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    asyncio.run(main(parser.parse_args().runs))
