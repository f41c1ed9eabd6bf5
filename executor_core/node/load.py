"""What a node reports as its load: the CPU and memory of its own process and its children.

Several nodes may share a host (``manage.py hive`` runs them side by side): host-wide figures
would make them all report the same numbers. A node's share is its process tree's CPU time
over the interval, as a percentage of the host's cores, and its tree's resident memory as a
percentage of the host's memory. Its children are found through Linux's /proc (a scan of
every process on the host would stall a node whose agent keeps the interpreter busy). Free
memory and free disk (the filesystem of the state directory) are the host's: nodes sharing a
host share them; a figure that cannot be read is reported as unknown (null).
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil

MAX_DESCENDANTS = 256


def _clamp(value: float) -> float:
    return min(100.0, max(0.0, value))


class ProcessLoad:
    def __init__(
        self, process: psutil.Process | None = None, directory: Path | None = None
    ) -> None:
        self._process = process or psutil.Process()
        self._directory = directory
        self._cores = psutil.cpu_count() or 1
        self._total_memory = psutil.virtual_memory().total or 1
        self._children: dict[int, psutil.Process] = {}
        self.sample()  # the first reading only sets the baseline of the next

    def _tree(self) -> list[psutil.Process]:
        # The same Process objects from one reading to the next: each keeps its own baseline
        # (a child's first reading counts nothing: it only sets that baseline).
        alive = {}
        for pid in descendants(self._process.pid):
            known = self._children.get(pid)
            if known is None:
                try:
                    known = psutil.Process(pid)
                except psutil.Error:  # ended since it was listed
                    continue
            alive[pid] = known
        self._children = alive
        return [self._process, *alive.values()]

    def sample(self) -> tuple[float, float]:
        """(cpu %, memory %) of the node's process tree since the last sample, 0..100."""
        cpu = rss = 0.0
        for proc in self._tree():
            try:
                cpu += proc.cpu_percent(None)
                rss += proc.memory_info().rss
            except psutil.Error:  # a child that ended between the listing and the reading
                continue
        return _clamp(cpu / self._cores), _clamp(100.0 * rss / self._total_memory)

    def free_memory_mb(self) -> int:
        """The host's available memory."""
        return psutil.virtual_memory().available >> 20

    def free_disk_mb(self) -> int | None:
        """Free space where the node keeps its state (None when it cannot be read)."""
        if self._directory is None:
            return None
        try:
            return psutil.disk_usage(str(self._directory)).free >> 20
        except OSError:
            return None


def descendants(pid: int) -> list[int]:
    """The process's descendants, from /proc/PID/task/TID/children: a few small reads.
    Elsewhere than Linux none are found (the node reports its own process only)."""
    found, todo = [], [pid]
    while todo and len(found) < MAX_DESCENDANTS:
        parent = todo.pop()
        try:
            threads = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in threads:
            try:
                with open(f"/proc/{parent}/task/{tid}/children") as handle:
                    children = [int(p) for p in handle.read().split()]
            except (OSError, ValueError):
                continue
            found += children
            todo += children
    return found
