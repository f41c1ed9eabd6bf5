"""A node reports its own process tree's load, not the host's (nodes may share a host)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from executor_core.node.load import ProcessLoad

SPIN = "while True: pass"
# A parent that only waits for the spinning child it started.
PARENT = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {SPIN!r}])"
IDLE = "import time; time.sleep(60)"


@pytest.fixture
def python() -> Iterator:
    started: list[subprocess.Popen[bytes]] = []

    def run(code: str) -> psutil.Process:
        proc = subprocess.Popen([sys.executable, "-c", code])
        started.append(proc)
        return psutil.Process(proc.pid)

    yield run
    for proc in started:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait()


def measure(process: psutil.Process, seconds: float = 0.5) -> tuple[float, float]:
    load = ProcessLoad(process)
    time.sleep(seconds)
    return load.sample()


def test_a_busy_host_does_not_make_an_idle_node_look_busy(python) -> None:
    python(SPIN)  # someone else's work on the same host
    idle = python(IDLE)
    cpu, mem = measure(idle)
    assert cpu < 5.0
    assert mem < psutil.virtual_memory().percent  # its own share, not the host's


def test_the_nodes_own_work_shows(python) -> None:
    cpu, _ = measure(python(SPIN))
    assert cpu > 5.0  # one spinning core of the host's, whatever else runs


def test_work_of_the_nodes_children_counts_for_the_node(python) -> None:
    parent = python(PARENT)
    deadline = time.monotonic() + 10
    while not parent.children() and time.monotonic() < deadline:
        time.sleep(0.05)
    cpu, _ = measure(parent)
    assert cpu > 5.0
