"""Scheduler benchmark: decisions per second and decision latency of ClusterState.

For 100, 1,000 and 10,000 nodes, each affinity policy, with and without a node selector (one
``zone`` label value, on 10% of the nodes), the fleet is first filled to about half its
capacity with teams of four, then run in a steady state: release the oldest task, place a
new member of the same team, with a team_nodes hint taken from the live placements.

``--all-plugins`` turns every plugin on: the nodes carry capabilities, models and heartbeat
resources, and every request asks for a capability, a model, free memory and a CPU ceiling,
prefers two labels and excludes one node; one request in 50 is pinned to a node.

``decisions/s`` counts place + release pairs per second of time spent inside the two calls
(building the request is the caller's cost and is left out); p50 / p99 are the latency of
``place`` alone. ``scan`` is a plain linear-scan placer run from the same filled state in the
same process: the same profile's plugins over every node, no index, no sampling. ``ratio`` is
ClusterState's decisions/s over the scan's.

``--failing`` measures decisions that fail instead: every node is filled to capacity, then
new members of the teams ask for a node, as a queue of waiting tasks does (the hub's batch
submission: 2 nodes of capacity 16, many tasks per request). ``repeat`` changes nothing
between the failures; ``heartbeat`` upserts a node with a new CPU figure before each one (its
load and static facts unchanged), as heartbeats interleave with a queue.

Run: ``python bench/scheduler.py`` (about a minute and a half) or ``--quick``; ``--profile``
prints the cProfile of one case instead of the table. Seeded: the fleets and the task
streams are the same on every run.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from executor_core.scheduling import (
    ClusterState,
    NodeInfo,
    Placement,
    ScheduleHints,
    ScheduleRequest,
    SchedulingError,
)
from executor_core.scheduling.framework import Framework, narrow_all, rate_all
from executor_core.types import NodeAffinityPolicy

SEED = 20240601
SIZES = (100, 1_000, 10_000)
ZONES = 10  # the selector ``zone=zK`` matches 10% of the nodes
TEAM_SIZE = 4
LOAD = 0.5
AGENT_IDS = ("coder", "writer", "search")
RESTRICTED_AGENTS = frozenset({"coder", "writer"})


PINNED_EVERY = 50  # with --all-plugins, one request in this many names its node


def build_fleet(size: int, rng: random.Random) -> list[NodeInfo]:
    nodes = []
    for i in range(size):
        roll = rng.random()
        capabilities = {"browser"} if rng.random() < 0.9 else set()
        if rng.random() < 0.3:
            capabilities.add("gpu_inference")
        nodes.append(
            NodeInfo(
                name=f"node-{i:05d}",
                labels={
                    "zone": f"z{rng.randrange(ZONES)}",
                    "pool": f"p{rng.randrange(4)}",
                    "arch": "arm64" if rng.random() < 0.2 else "amd64",
                },
                capacity=rng.randint(4, 16),
                ready=roll >= 0.02,
                cordoned=0.02 <= roll < 0.03,
                # One node in ten runs only some agents.
                agents=RESTRICTED_AGENTS if rng.random() < 0.1 else frozenset(),
                # Read only by the requests of --all-plugins.
                capabilities=frozenset(capabilities),
                models=frozenset({"llama3"} if rng.random() < 0.9 else {"mistral"}),
                cpu_percent=round(rng.uniform(0, 100), 1),
                free_memory_mb=rng.randint(512, 16_384),
                free_disk_mb=rng.randint(1_000, 100_000),
            )
        )
    return nodes


@dataclass
class Task:
    session_id: str
    team_id: str
    agent_id: str
    node_selector: Mapping[str, str]
    # Set with --all-plugins: a node to pin to (or ""), and a node to keep away from.
    pinned: str = ""
    excluded: str = ""


def make_request(
    task: Task, policy: NodeAffinityPolicy, team_nodes: Mapping[str, int], every: bool
) -> ScheduleRequest:
    hints = ScheduleHints(
        affinity=policy,
        team_nodes=team_nodes,
        excluded_nodes=frozenset({task.excluded}) if task.excluded else frozenset(),
    )
    if not every:
        return ScheduleRequest(
            session_id=task.session_id,
            agent_id=task.agent_id,
            team_id=task.team_id,
            node_selector=task.node_selector,
            hints=hints,
        )
    return ScheduleRequest(
        session_id=task.session_id,
        agent_id=task.agent_id,
        team_id=task.team_id,
        node_selector=task.node_selector,
        hints=hints,
        node=task.pinned,
        prefer_labels={"arch": "amd64", "pool": "p1"},
        capabilities=frozenset({"browser"}),
        min_free_memory_mb=1024,
        max_cpu_percent=90.0,
        model="llama3",
    )


class _Row:
    """A node as the baseline keeps it: the attributes the plugins read, running mutable."""

    __slots__ = (
        "agents",
        "capabilities",
        "capacity",
        "cordoned",
        "cpu_percent",
        "free_disk_mb",
        "free_memory_mb",
        "labels",
        "models",
        "name",
        "ready",
        "running",
    )

    def __init__(self, info: NodeInfo) -> None:
        for slot in self.__slots__:
            setattr(self, slot, getattr(info, slot))


class LinearScan:
    """The baseline: the same plugins over every node on every decision, no index."""

    def __init__(self, nodes: list[NodeInfo]) -> None:
        self.nodes = [_Row(n) for n in sorted(nodes, key=lambda n: n.name)]
        self.by_name = {row.name: row for row in self.nodes}
        self.placed: dict[str, tuple[str, str | None]] = {}
        self.teams: dict[str, dict[str, int]] = {}
        self.framework = Framework()

    def assume(self, session_id: str, node: str, team_id: str | None) -> None:
        self.by_name[node].running += 1
        self.placed[session_id] = (node, team_id)
        if team_id:
            nodes = self.teams.setdefault(team_id, {})
            nodes[node] = nodes.get(node, 0) + 1

    def team_nodes(self, team_id: str) -> dict[str, int]:
        return dict(self.teams.get(team_id, {}))

    def place(self, request: ScheduleRequest) -> Placement:
        cycle = self.framework.cycle(request)
        feasible = narrow_all(cycle.narrows, self.nodes, {})
        if not feasible:
            raise SchedulingError("no feasible node")
        totals, _each = rate_all(cycle.rates, feasible)
        score, _running, name = min(
            (-t, n.running, n.name) for t, n in zip(totals, feasible, strict=True)
        )
        self.assume(request.session_id, name, request.team_id)
        return Placement(node=name, score=-score, reason="linear scan")

    def release(self, session_id: str) -> None:
        if session_id not in self.placed:
            return  # its placement had failed
        node, team_id = self.placed.pop(session_id)
        self.by_name[node].running -= 1
        if team_id:
            nodes = self.teams[team_id]
            nodes[node] -= 1
            if not nodes[node]:
                del nodes[node]


@dataclass
class Result:
    decisions: int = 0
    failed: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.decisions / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6


def successor(old: Task, number: int, names: list[str] | None) -> Task:
    """The next member of the old task's team; with ``names`` (--all-plugins) it excludes a
    node, and one in PINNED_EVERY is pinned to one (both picked by its number)."""
    task = Task(f"s{number}", old.team_id, old.agent_id, old.node_selector)
    if names:
        task.excluded = names[number * 7_919 % len(names)]
        if number % PINNED_EVERY == 0:
            task.pinned = names[number * 104_729 % len(names)]
    return task


def steady_state(
    placer: ClusterState | LinearScan,
    live: deque[Task],
    policy: NodeAffinityPolicy,
    decisions: int,
    budget: float,
    seq: int,
    names: list[str] | None,
    clock: Callable[[], float] = time.perf_counter,
) -> Result:
    """Release the oldest task, place a new member of its team; time both calls."""
    result = Result()
    deadline = time.perf_counter() + budget
    for step in range(decisions):
        old = live.popleft()
        t0 = clock()
        placer.release(old.session_id)
        t1 = clock()
        task = successor(old, seq + step, names)
        request = make_request(task, policy, placer.team_nodes(task.team_id), names is not None)
        t2 = clock()
        try:
            placer.place(request)
        except SchedulingError:
            result.failed += 1
        t3 = clock()
        live.append(task)  # a failed one is simply retried when its turn comes round again
        result.seconds += (t1 - t0) + (t3 - t2)
        result.latencies.append(t3 - t2)
        result.decisions += 1
        if step % 64 == 0 and time.perf_counter() > deadline:
            break
    return result


def fill(
    state: ClusterState,
    size: int,
    policy: NodeAffinityPolicy,
    with_selector: bool,
    rng: random.Random,
    every: bool,
) -> deque[Task]:
    total = sum(n.capacity for n in state.nodes() if n.ready and not n.cordoned)
    live: deque[Task] = deque()
    tasks = int(total * LOAD)
    for i in range(tasks):
        team = i // TEAM_SIZE
        node_selector = {"zone": f"z{team % ZONES}"} if with_selector else {}
        task = Task(f"f{i}", f"team-{team}", rng.choice(AGENT_IDS), node_selector)
        try:
            state.place(make_request(task, policy, state.team_nodes(task.team_id), every))
        except SchedulingError:
            continue
        live.append(task)
    rng.shuffle(live)  # release in no particular team order
    return live


def run(
    size: int,
    policy: NodeAffinityPolicy,
    with_selector: bool,
    quick: bool,
    every: bool,
    clock: Callable[[], float],
) -> dict:
    rng = random.Random(f"{SEED}-{size}-{policy.value}-{with_selector}")
    state = ClusterState(build_fleet(size, rng))
    live = fill(state, size, policy, with_selector, rng, every)
    names = [n.name for n in state.nodes()] if every else None

    # The baseline starts from a copy of the same filled state.
    scan = LinearScan(state.nodes())
    for node in scan.nodes:
        node.running = 0
    for task in live:
        placement = state.placement_of(task.session_id)
        assert placement is not None
        scan.assume(task.session_id, placement.node, task.team_id)
    scan_live = deque(live)

    n = 3_000 if quick else 20_000
    steady_state(state, live, policy, n // 10, 5.0, 10_000_000, names, clock)  # warm-up
    ours = steady_state(state, live, policy, n, 4.0 if quick else 8.0, 20_000_000, names, clock)
    base = steady_state(scan, scan_live, policy, n, 0.5 if quick else 1.5, 30_000_000, names, clock)
    return {
        "nodes": size,
        "policy": policy.value,
        "selector": "zone (10%)" if with_selector else "-",
        "rate": ours.rate,
        "p50": ours.percentile(0.50),
        "p99": ours.percentile(0.99),
        "failed": 100.0 * ours.failed / max(1, ours.decisions),
        "scan_rate": base.rate,
        "scan_p50": base.percentile(0.50),
        "ratio": ours.rate / base.rate if base.rate else float("inf"),
    }


COLUMNS = (
    ("nodes", "{:>6}"),
    ("policy", "{:<16}"),
    ("selector", "{:<10}"),
    ("rate", "{:>11,.0f}"),
    ("p50", "{:>8.1f}"),
    ("p99", "{:>8.1f}"),
    ("failed", "{:>7.1f}"),
    ("scan_rate", "{:>10,.0f}"),
    ("scan_p50", "{:>10.1f}"),
    ("ratio", "{:>7.1f}"),
)
HEADERS = {
    "nodes": "nodes",
    "policy": "policy",
    "selector": "selector",
    "rate": "decisions/s",
    "p50": "p50 µs",
    "p99": "p99 µs",
    "failed": "failed%",
    "scan_rate": "scan dec/s",
    "scan_p50": "scan p50µs",
    "ratio": "ratio",
}


def row(values: Mapping[str, object], header: bool = False) -> str:
    cells = []
    for key, fmt in COLUMNS:
        if header:
            align, width = fmt[2], int(re.match(r"\{:[<>](\d+)", fmt)[1])
            cells.append(f"{HEADERS[key]:{align}{width}}")
        else:
            cells.append(fmt.format(values[key]))
    return "  ".join(cells)


FAILING_FLEETS = ((2, 16), (100, 8), (1_000, 8))  # (nodes, capacity of each)


def run_failing(
    size: int,
    capacity: int,
    policy: NodeAffinityPolicy,
    heartbeat: bool,
    quick: bool,
    every: bool,
    clock: Callable[[], float],
) -> dict:
    rng = random.Random(f"{SEED}-failing-{size}-{policy.value}")
    fleet = [
        NodeInfo(
            name=n.name,
            labels=n.labels,
            capacity=capacity,
            agents=frozenset(),
            capabilities=frozenset({"browser"}),
            models=frozenset({"llama3"}),
            cpu_percent=50.0,
            free_memory_mb=8_192,
        )
        for n in build_fleet(size, rng)
    ]
    state = ClusterState(fleet)
    names = [n.name for n in fleet] if every else None
    placed = 0
    while True:  # fill every node: teams of four, as in the steady state
        team = f"team-{placed // TEAM_SIZE}"
        task = Task(f"f{placed}", team, rng.choice(AGENT_IDS), {})
        try:
            state.place(make_request(task, policy, state.team_nodes(team), every))
        except SchedulingError:
            break
        placed += 1
    n = 3_000 if quick else 20_000
    result = Result()
    deadline = time.perf_counter() + (2.0 if quick else 6.0)
    for step in range(n):
        k = step % max(1, placed // TEAM_SIZE)
        team = f"team-{k}"
        task = successor(Task("", team, AGENT_IDS[k % 3], {}), 40_000_000 + step, names)
        # A queue of first attempts for the fleet: not pinned, nothing excluded yet.
        task.pinned = task.excluded = ""
        request = make_request(task, policy, state.team_nodes(team), every)
        if heartbeat:
            # The node's own report: its running count as it is, a CPU figure it did not
            # report last time (every figure stays under the requests' ceiling).
            info = state.node(fleet[step % size].name)
            assert info is not None
            state.upsert_node(replace(info, cpu_percent=40.0 + step // size % 10))
        t0 = clock()
        try:
            state.place(request)
        except SchedulingError:
            result.failed += 1
        t1 = clock()
        result.seconds += t1 - t0
        result.latencies.append(t1 - t0)
        result.decisions += 1
        if step % 64 == 0 and time.perf_counter() > deadline:
            break
    assert result.failed == result.decisions, "the fleet was to stay full"
    return {
        "nodes": size,
        "policy": policy.value,
        "between": "heartbeat" if heartbeat else "repeat",
        "rate": result.rate,
        "p50": result.percentile(0.50),
        "p99": result.percentile(0.99),
    }


def failing(args: argparse.Namespace, policies: list[NodeAffinityPolicy]) -> int:
    clock = time.thread_time if args.cpu_clock else time.perf_counter
    head = ("nodes", "policy", "between", "failed/s", "p50 µs", "p99 µs")
    print("{:>6}  {:<16}  {:<10}  {:>10}  {:>8}  {:>8}".format(*head))
    for size, capacity in FAILING_FLEETS:
        if args.sizes != list(SIZES) and size not in args.sizes:
            continue
        for heartbeat in (False, True):
            for policy in policies:
                r = run_failing(
                    size, capacity, policy, heartbeat, args.quick, args.all_plugins, clock
                )
                print(
                    f"{r['nodes']:>6}  {r['policy']:<16}  {r['between']:<10}  {r['rate']:>10,.0f}"
                    f"  {r['p50']:>8.1f}  {r['p99']:>8.1f}",
                    flush=True,
                )
    return 0


def profile_case(size: int, policy: NodeAffinityPolicy, every: bool) -> int:
    """The hot spots of ClusterState in one steady-state case, by own time."""
    import cProfile
    import pstats

    rng = random.Random(f"{SEED}-{size}-{policy.value}-False")
    state = ClusterState(build_fleet(size, rng))
    live = fill(state, size, policy, False, rng, every)
    names = [n.name for n in state.nodes()] if every else None
    profiler = cProfile.Profile()
    profiler.enable()
    steady_state(state, live, policy, 20_000, 30.0, 20_000_000, names)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(18)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer decisions per case")
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    parser.add_argument(
        "--all-plugins",
        action="store_true",
        help="requests use every plugin (capabilities, model, resources, preferences, ...)",
    )
    parser.add_argument(
        "--policies",
        nargs="*",
        choices=[p.value for p in NodeAffinityPolicy],
        default=[p.value for p in NodeAffinityPolicy],
    )
    parser.add_argument(
        "--cpu-clock",
        action="store_true",
        help="time the calls in this thread's CPU time: on a shared machine, time spent "
        "waiting for a core is left out",
    )
    parser.add_argument(
        "--failing",
        action="store_true",
        help="measure failing decisions on full fleets (2, 100 and 1,000 nodes) instead",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print the cProfile of the first case (first size, no selector) and stop",
    )
    args = parser.parse_args(argv)
    policies = [NodeAffinityPolicy(p) for p in args.policies]
    if args.profile:
        return profile_case(args.sizes[0], policies[0], args.all_plugins)
    if args.failing:
        return failing(args, policies)
    clock = time.thread_time if args.cpu_clock else time.perf_counter
    started = time.perf_counter()
    print(row({}, header=True))
    rates = []
    for size in args.sizes:
        for with_selector in (False, True):
            for policy in policies:
                result = run(size, policy, with_selector, args.quick, args.all_plugins, clock)
                rates.append(result["rate"])
                print(row(result), flush=True)
    print(
        f"\n{len(rates)} cases in {time.perf_counter() - started:.0f} s; "
        f"median {statistics.median(rates):,.0f} decisions/s; Python {sys.version.split()[0]}; "
        f"{'CPU' if args.cpu_clock else 'wall'} clock"
        + ("; every plugin on" if args.all_plugins else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
