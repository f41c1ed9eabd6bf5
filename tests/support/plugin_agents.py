"""Agents a test installs as a plugin (``hivemind.agents`` entry points) into a node or hub.

``install_plugins(dir)`` writes a distribution's metadata declaring them into ``dir``; a
process with ``dir`` and the tests directory on its PYTHONPATH discovers them the way it
discovers any installed plugin.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from executor_core.agents import AgentContext

TESTS = Path(__file__).resolve().parents[1]
ENTRY_POINTS = {
    "busy": "support.plugin_agents:BusyAgent",
    "busy-isolated": "support.plugin_agents:IsolatedBusyAgent",
}


class BusyAgent:
    """A plain ``def`` that spins the CPU for ``input`` seconds and never looks at its context
    (the careless agent: it would stall an event loop it ran on)."""

    name = "busy"

    def run(self, input: str, ctx: AgentContext) -> str:
        ctx.log(f"pid {os.getpid()}")
        end = time.monotonic() + float(input)
        spins = 0
        while time.monotonic() < end:
            spins += 1
        return f"spun {spins} times"


class IsolatedBusyAgent(BusyAgent):
    """The same agent, run in a child process: a cancel kills it."""

    name = "busy-isolated"
    isolation = "process"


def install_plugins(directory: Path) -> str:
    """Declare the agents above as an installed distribution in ``directory``; returns the
    PYTHONPATH under which a process finds them."""
    info = directory / "hivemind_test_plugins-1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: hivemind-test-plugins\nVersion: 1.0\n"
    )
    lines = "".join(f"{name} = {target}\n" for name, target in ENTRY_POINTS.items())
    (info / "entry_points.txt").write_text(f"[hivemind.agents]\n{lines}")
    return os.pathsep.join([str(directory), str(TESTS)])
