"""Resources: hard limits on the node's latest heartbeat (free memory, CPU use), and a score
for the headroom left beyond them.

A node that did not report the figure a request limits is ruled out under the same reason as
one short of it: an unknown is not room.
Headroom is how far the node is from the limit, relative: free memory beyond the minimum as a
share of the free memory, CPU below the maximum as a share of the maximum; with both limits,
their mean.
"""

from __future__ import annotations

from collections.abc import Hashable
from functools import lru_cache
from typing import Any

from executor_core.scheduling.plugins.base import Filter, Narrow, Rate, Rejected, Score, reject
from executor_core.scheduling.types import ScheduleRequest

NAME = "NodeResources"
REASON_MEMORY = "less than {mb} MB memory free (or not reported)"
REASON_CPU = "CPU above {percent:g}% (or not reported)"


# Built once per pair of limits: formatting the two reasons costs more than a decision's
# checks of a few nodes. Typed, so that 1024 and 1024.0 keep their own reason phrase.
@lru_cache(maxsize=64, typed=True)
def _narrower(mem: int | None, cpu: float | None) -> Narrow:
    low_memory = REASON_MEMORY.format(mb=mem)
    high_cpu = REASON_CPU.format(percent=cpu or 0)

    # One pass per limit, memory first, so each drop is counted by length.
    def narrow(nodes: list[Any], rejected: Rejected) -> list[Any]:
        if mem is not None:
            kept = [n for n in nodes if (f := n.free_memory_mb) is not None and f >= mem]
            reject(rejected, low_memory, nodes, kept)
            nodes = kept
        if cpu is not None:
            kept = [n for n in nodes if (c := n.cpu_percent) is not None and c <= cpu]
            reject(rejected, high_cpu, nodes, kept)
            nodes = kept
        return nodes

    return narrow


class Resources(Filter, Score):
    name = NAME
    transient = True  # the next heartbeat may show room
    static = True  # the figures change only through upsert (a heartbeat)

    def score_key(self, request: ScheduleRequest) -> Hashable:
        return (request.min_free_memory_mb, request.max_cpu_percent)

    def request_key(self, request: ScheduleRequest) -> Hashable:
        mem, cpu = request.min_free_memory_mb, request.max_cpu_percent
        # Typed, as the reasons are: 1024 and 1024.0 are worded apart.
        return (mem, cpu, type(mem), type(cpu))

    def prefilter(self, request: ScheduleRequest) -> Narrow | None:
        mem, cpu = request.min_free_memory_mb, request.max_cpu_percent
        if mem is None and cpu is None:
            return None
        return _narrower(mem, cpu)

    def prescore(self, request: ScheduleRequest) -> Rate | None:
        mem, cpu = request.min_free_memory_mb, request.max_cpu_percent
        if mem is None and cpu is None:
            return None
        if cpu is None:

            def memory(nodes: Any) -> list[float]:
                return [
                    100.0 * (f - mem) / f
                    if (f := n.free_memory_mb) is not None and f > mem
                    else 0.0
                    for n in nodes
                ]

            return memory
        if mem is None:

            def processor(nodes: Any) -> list[float]:
                return [
                    100.0 * (cpu - c) / cpu if (c := n.cpu_percent) is not None and c < cpu else 0.0
                    for n in nodes
                ]

            return processor

        def both(nodes: Any) -> list[float]:
            # The mean of the two headrooms above, in one pass.
            return [
                (
                    (
                        100.0 * (f - mem) / f
                        if (f := n.free_memory_mb) is not None and f > mem
                        else 0.0
                    )
                    + (
                        100.0 * (cpu - c) / cpu
                        if (c := n.cpu_percent) is not None and c < cpu
                        else 0.0
                    )
                )
                / 2
                for n in nodes
            ]

        return both
