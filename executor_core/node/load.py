"""What a node reports as its load: the CPU and memory of its own process and its children.

Several nodes may share a host (``manage.py hive`` runs them side by side): host-wide figures
would make them all report the same numbers. A node's share is its process tree's CPU time
over the interval, as a percentage of the host's cores, and its tree's resident memory as a
percentage of the host's memory.
"""

from __future__ import annotations

import psutil


def _clamp(value: float) -> float:
    return min(100.0, max(0.0, value))


class ProcessLoad:
    def __init__(self, process: psutil.Process | None = None) -> None:
        self._process = process or psutil.Process()
        self._cores = psutil.cpu_count() or 1
        self._total_memory = psutil.virtual_memory().total or 1
        self._children: dict[int, psutil.Process] = {}
        self.sample()  # the first reading only sets the baseline of the next

    def _tree(self) -> list[psutil.Process]:
        try:
            found = self._process.children(recursive=True)
        except psutil.Error:
            found = []
        # The same Process objects from one reading to the next: each keeps its own baseline
        # (a child's first reading counts nothing: it only sets that baseline).
        alive = {}
        for child in found:
            alive[child.pid] = self._children.get(child.pid, child)
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
