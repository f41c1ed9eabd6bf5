"""End-to-end benchmark of the hub: real daphne hubs, real ``hivemind-node`` processes, no-op tasks.

Each round starts a fresh system (a temporary HIVEMIND_DATA_DIR with SQLite, or with ``--pg`` a
fresh PostgreSQL database plus the Redis channel layer), submits ``--tasks`` ``echo`` tasks
over the REST API (``single``: one POST per task from ``--clients`` keep-alive connections;
``batch``: 500 a request) and waits until every task is terminal. Figures come from the hub's
own timestamps, read back through the API at the end:

- tasks/s: tasks / (last ``finished_at`` - the first submit, by the client's clock)
- submit accepted tasks/s: tasks / time the clients took to get every submission answered
- submit→running and submit→done: ``started_at`` / ``finished_at`` (of succeeded tasks)
  - ``created_at``; for Celery, submit→done is the client's time before ``.delay()`` to the
  worker's time at the task's end (same machine, same clock)
- hub CPU per task: the hub processes' CPU time over the run (psutil) / tasks

``--peer celery`` runs the same workload through Celery + Redis in between (A/B/A/B...), and
prints each figure as min / median / max over ``--rounds`` with the ratio of the medians.
``--board N`` keeps N logged-in board websockets open during the run (frame lag, and whether
each client's final view equals the database); ``--sim-nodes N`` is a separate scenario: N
simulated node connections heartbeating for ``--duration`` seconds, no tasks.

Run: ``.venv/bin/python bench/e2e.py [--tasks 2000] [--mode single|batch] [--peer celery]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from e2e_support import (
    BENCH,
    PY,
    REDIS_HOST,
    REDIS_PORT,
    REPO,
    Api,
    BenchError,
    Child,
    Hivemind,
    HubConfig,
    Procs,
    epoch,
    keep_logs,
    percentile,
    reachable,
    ready_nodes,
    wait_until,
)

BATCH = 500
# Terminal statuses are the stable part of the lifecycle: count those rather than active ones.
TERMINAL_COUNT = "/api/v1/tasks/?status=succeeded,failed,cancelled&page_size=1"
ACTIVE = ("pending", "scheduled", "running")  # only to say what is stuck on a timeout
Figures = dict[str, Any]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tasks", type=int, default=2000)
    p.add_argument("--mode", choices=["single", "batch"], default="single")
    p.add_argument("--strategy", choices=["local", "golem"], default="golem")
    p.add_argument(
        "--max-wait",
        type=float,
        help="seconds a task may wait for a node (default: the hub's HIVEMIND_SCHEDULE_WAIT)",
    )
    p.add_argument("--clients", type=int, default=4, help="concurrent submitting clients")
    p.add_argument(
        "--pause",
        type=float,
        default=0.0,
        help="seconds each client waits after an answer before its next request: latency at "
        "a light load (e.g. --clients 1 --pause 0.05) instead of throughput",
    )
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--capacity", type=int, default=16, help="capacity of each node")
    p.add_argument("--hubs", type=int, choices=[1, 2], default=1)
    p.add_argument("--pg", action="store_true", help="PostgreSQL + the Redis channel layer")
    p.add_argument("--redis-db", type=int, default=3, help="Redis database for --pg/--hubs 2")
    p.add_argument("--peer", choices=["celery"], help="also run the workload through this peer")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--board", type=int, default=0, help="board websocket clients during the run")
    p.add_argument("--sim-nodes", type=int, default=0, help="idle fleet scenario: node count")
    p.add_argument("--duration", type=float, default=30.0, help="--sim-nodes steady window (s)")
    p.add_argument("--timeout", type=float, default=900.0, help="longest wait for one round (s)")
    args = p.parse_args(argv)
    if args.tasks < 1 or args.clients < 1 or args.rounds < 1 or args.nodes < 0:
        p.error("--tasks, --clients and --rounds must be positive, --nodes at least 0")
    if args.pause < 0:
        p.error("--pause must be 0 or more seconds")
    if args.strategy == "golem" and args.nodes == 0 and not args.sim_nodes:
        p.error("--strategy golem needs --nodes")
    if args.sim_nodes and (args.peer or args.board):
        p.error("--sim-nodes is a scenario of its own: drop --peer and --board")
    return args


def print_config(args: argparse.Namespace) -> None:
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    peer_workers = max(1, args.nodes)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    rows = [
        ("code", f"{REPO} {commit}".strip()),
        ("machine", f"{os.cpu_count()} CPUs, Python {platform.python_version()}"),
        ("load average at start", load),
        ("database", "PostgreSQL (fresh database)" if args.pg else "SQLite (fresh data dir)"),
        ("channel layer", "Redis" if args.pg or args.hubs > 1 else "in-memory"),
        ("hubs", args.hubs),
        ("rounds", args.rounds),
    ]
    if args.sim_nodes:
        rows += [("simulated nodes", args.sim_nodes), ("steady window", f"{args.duration:g} s")]
    else:
        rows += [
            ("tasks", f"{args.tasks} echo, strategy {args.strategy}"),
            ("max_wait", "the hub's default" if args.max_wait is None else f"{args.max_wait:g} s"),
            ("mode", f"{args.mode} ({BATCH} a request)" if args.mode == "batch" else args.mode),
            ("clients", args.clients),
            ("pause after each answer", f"{args.pause:g} s"),
            ("nodes", f"{args.nodes} x capacity {args.capacity}"),
            ("local slots", f"{max(1, args.nodes * args.capacity)} (HIVEMIND_LOCAL_CONCURRENCY)"),
            ("board clients", args.board),
            (
                "peer",
                f"celery: {peer_workers} thread-pool workers x {args.capacity}"
                if args.peer
                else "none",
            ),
        ]
    print("# Hivemind end-to-end benchmark\n\n| setting | value |\n|---|---|")
    for key, value in rows:
        print(f"| {key} | {value} |")
    print(flush=True)


# Submitting and waiting


class Submitter:
    """Sends every task from ``--clients`` threads (spread over the hubs) in the background.

    Daemon threads that check ``stop`` between requests, so Ctrl-C never waits for a
    submission to finish.
    """

    def __init__(self, api: Api, args: argparse.Namespace) -> None:
        wait = {} if args.max_wait is None else {"max_wait": args.max_wait}
        body = [
            {"agent_id": "echo", "input": f"bench {i}", "strategy": args.strategy, **wait}
            for i in range(args.tasks)
        ]
        if args.mode == "batch":
            self.units = [
                ("/api/v1/tasks/batch/", {"tasks": body[i : i + BATCH]})
                for i in range(0, len(body), BATCH)
            ]
        else:
            self.units = [("/api/v1/tasks/", task) for task in body]
        self.api, self.clients, self.hubs = api, args.clients, args.hubs
        self.pause = args.pause
        self.first = float("inf")  # wall clock of the first request sent
        self.last = 0.0  # wall clock of the last answer received
        self.accepted = 0
        self.errors: list[str] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._client, args=(k,), daemon=True)
            for k in range(self.clients)
        ]

    def start(self) -> Submitter:
        for thread in self._threads:
            thread.start()
        return self

    def done(self) -> bool:
        return not any(thread.is_alive() for thread in self._threads)

    def _client(self, k: int) -> None:
        for path, payload in self.units[k :: self.clients]:
            if self.stop.is_set():
                return
            sent = time.time()
            try:
                status, answer = self.api.call("POST", path, payload, hub=k % self.hubs)
            except OSError as exc:
                status, answer = 0, exc
            with self._lock:
                self.first = min(self.first, sent)
                self.last = max(self.last, time.time())
                if status == 201:
                    self.accepted += len(payload.get("tasks", [payload]))
                else:
                    self.errors.append(f"{status}: {str(answer)[:200]}")
            if self.pause:
                self.stop.wait(self.pause)


def wait_terminal(api: Api, sub: Submitter, procs: Procs, timeout: float) -> set[str]:
    """Poll until every accepted task is terminal; returns the nodes seen not ready meanwhile."""
    not_ready: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check()
        for node in api.list_all("/api/v1/nodes/"):
            if node["status"] != "ready":
                not_ready.add(f"{node['name']} ({node['status']})")
        if sub.done() and api.get(TERMINAL_COUNT)["count"] >= sub.accepted:
            return not_ready
        time.sleep(0.5)
    counts = {s: api.get(f"/api/v1/tasks/?status={s}&page_size=1")["count"] for s in ACTIVE}
    raise BenchError(f"tasks still active after {timeout:g}s: {counts}")


def task_figures(tasks: list[dict[str, Any]], sub: Submitter, n: int) -> Figures:
    created = {t["session_id"]: epoch(t["created_at"]) for t in tasks}
    running = [
        (epoch(t["started_at"]) - created[t["session_id"]]) * 1000 for t in tasks if t["started_at"]
    ]
    succeeded = [t for t in tasks if t["status"] == "succeeded"]
    done = [(epoch(t["finished_at"]) - created[t["session_id"]]) * 1000 for t in succeeded]
    finished = [epoch(t["finished_at"]) for t in tasks if t["finished_at"]]
    reasons = [t["fallback_reason"] for t in tasks if t["fallback_reason"]]
    return {
        "tasks/s": len(tasks) / (max(finished) - sub.first) if finished else 0.0,
        "submit accepted tasks/s": sub.accepted / (sub.last - sub.first),
        "submit→running p50 (ms)": percentile(running, 50),
        "submit→running p99 (ms)": percentile(running, 99),
        "submit→done p50 (ms)": percentile(done, 50),
        "submit→done p99 (ms)": percentile(done, 99),
        "succeeded": len(succeeded),
        "failed": sum(t["status"] == "failed" for t in tasks),
        "other / missing": n - len(succeeded) - sum(t["status"] == "failed" for t in tasks),
        "ran on a node": sum(t["route"] == "golem" for t in tasks),
        "fell back": len(reasons),
        "fell back: not ready": sum("not ready" in r.lower() for r in reasons),
        "most common fallback reason": _top_reason(reasons),
        "submit errors": len(sub.errors),
    }


def _top_reason(reasons: list[str]) -> str:
    if not reasons:
        return "none"
    # Reasons carry counts ("0/2 nodes available: 2 at capacity"): group by their words.
    words = Counter(re.sub(r"\d+", "N", r) for r in reasons)
    reason, n = words.most_common(1)[0]
    return f"{n}x {reason[:90]}"


# Board clients (bench/e2e_ws.py board)


def start_ws_process(procs: Procs, mode: str, hivemind: Hivemind) -> tuple[Child, Path]:
    out = hivemind.tmp / f"{mode}.json"
    argv = [PY, str(BENCH / "e2e_ws.py"), mode, "--hubs", ",".join(hivemind.urls)]
    argv += ["--credentials", str(hivemind.tmp / "setup.json"), "--out", str(out)]
    argv += ["--expected", str(expected_path(out))]
    child = procs.start(f"ws-{mode}", argv, {**hivemind.env, "PYTHONPATH": str(REPO)})
    wait_until(
        lambda: out.with_name(out.name + ".ready").exists(),
        timeout=180,
        what=f"the {mode} websocket clients",
        procs=procs,
    )
    return child, out


def expected_path(out: Path) -> Path:
    return out.with_name(out.stem + ".expected.json")


def stop_ws_process(
    child: Child, out: Path, expected: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    if expected is not None:
        expected_path(out).write_text(json.dumps(expected))
    child.proc.send_signal(signal.SIGTERM)
    child.proc.wait(timeout=300)
    if not out.exists():
        raise BenchError(f"{child.name} wrote no results; its log:\n{child.tail()}")
    return json.loads(out.read_text())


def board_figures(clients: list[dict[str, Any]], db: dict[str, str]) -> Figures:
    lags = [
        (received - epoch(updated)) * 1000 for c in clients for received, updated in c["arrivals"]
    ]
    return {
        "board frame lag p50 (ms)": percentile(lags, 50),
        "board frame lag p99 (ms)": percentile(lags, 99),
        "board clients equal to the database": sum(c["view"] == db for c in clients),
        # From the bench reading the tasks back to the client's view equalling them.
        "board catch-up after the run, max (s)": max(
            (c["caught_up"] for c in clients if c["caught_up"] is not None), default=math.nan
        ),
        "board sequence gaps": sum(c["gaps"] for c in clients),
        # After a gap, or a frame too big to send (the hub sends a snapshot instead).
        "board snapshots after the first": sum(c["snapshots"] - 1 for c in clients),
    }


# Rounds


def hub_config(args: argparse.Namespace, **extra: Any) -> HubConfig:
    return HubConfig(
        hubs=args.hubs,
        nodes=args.nodes,
        capacity=args.capacity,
        tasks=args.tasks,
        pg=args.pg,
        redis_db=args.redis_db,
        board=args.board,
        **extra,
    )


def hivemind_round(args: argparse.Namespace) -> Figures:
    system = Hivemind(hub_config(args))
    try:
        creds = system.prepare()
        system.start_hubs()
        api = Api(system.urls, creds.token)
        system.start_nodes(api)
        board = start_ws_process(system.procs, "board", system) if args.board else None
        cpu_before = system.hub_cpu_seconds()
        sub = Submitter(api, args).start()
        try:
            not_ready = wait_terminal(api, sub, system.procs, args.timeout)
        finally:
            sub.stop.set()  # a no-op once every task is sent
        cpu = system.hub_cpu_seconds() - cpu_before
        tasks = api.list_all("/api/v1/tasks/")
        figures = task_figures(tasks, sub, args.tasks)
        figures["hub CPU per task (ms)"] = cpu / max(1, len(tasks)) * 1000
        figures["nodes not ready during run"] = ", ".join(sorted(not_ready)) or "none"
        # A hub that logs errors while the figures look fine is still worth a look.
        figures["hub log ERROR lines"] = sum(
            hub.tail(10**8).count(" ERROR ") for hub in system.hubs
        )
        if sub.errors:
            print(f"  submit error, first of {len(sub.errors)}: {sub.errors[0]}")
        if board:
            db = {t["session_id"]: t["status"] for t in tasks}
            figures |= board_figures(stop_ws_process(*board, expected=db), db)
        return figures
    except BenchError:
        keep_logs(system.tmp)
        raise
    finally:
        system.close()


def celery_round(args: argparse.Namespace) -> Figures:
    from celery_peer import CeleryPeer  # only --peer celery needs Celery installed

    if shutil.which("redis-server") is None:
        raise BenchError("--peer celery needs redis-server on PATH")
    tmp = Path(tempfile.mkdtemp(prefix="hivemind-bench-celery-"))
    procs = Procs(tmp)
    try:
        peer = CeleryPeer(procs, workers=max(1, args.nodes), concurrency=args.capacity)
        peer.start()
        raw = peer.run(args.tasks, args.mode, args.clients, BATCH, args.pause)
        return {
            "tasks/s": raw["tasks"] / raw["elapsed"],
            "submit accepted tasks/s": raw["tasks"] / raw["submit_elapsed"],
            "submit→done p50 (ms)": percentile(raw["done_ms"], 50),
            "submit→done p99 (ms)": percentile(raw["done_ms"], 99),
            "succeeded": raw["succeeded"],
        }
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def fleet_state(system: Hivemind) -> int:
    """How many times a node went not_ready so far (its audit trail, in the database)."""
    snippet = (
        "from hivemind_web.hub.models import NodeEvent\n"
        "print(NodeEvent.objects.filter(kind='not_ready').count())"
    )
    return int(system.manage("shell", "-c", snippet).split()[-1])


def steady_cpu_percent(system: Hivemind, seconds: float) -> float:
    """The hubs' CPU use over the next ``seconds``, in % of one core (summed over hubs)."""
    import psutil

    hubs = [psutil.Process(hub.proc.pid) for hub in system.hubs]
    for hub in hubs:
        hub.cpu_percent(None)  # the baseline
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        system.procs.check()
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    return sum(hub.cpu_percent(None) for hub in hubs)


def fleet_round(args: argparse.Namespace) -> Figures:
    """``--sim-nodes``: an idle fleet heartbeating every second; hub CPU and readiness."""
    system = Hivemind(hub_config(args, sim_nodes=args.sim_nodes))
    try:
        creds = system.prepare()
        system.start_hubs()
        api = Api(system.urls, creds.token)
        connecting = time.monotonic()
        sim = start_ws_process(system.procs, "sim", system)
        wait_until(
            lambda: len(ready_nodes(api)) >= args.sim_nodes,
            timeout=180,
            what=f"{args.sim_nodes} ready simulated nodes",
            procs=system.procs,
        )
        ramp_up = time.monotonic() - connecting
        # Read before the window opens: the shell's own start-up must not share it.
        before = fleet_state(system)
        cpu = steady_cpu_percent(system, args.duration)
        ready_at_end = len(ready_nodes(api))
        after = fleet_state(system)
        nodes = stop_ws_process(*sim)
        flaps = after - before
        return {
            "connect + hello until all ready (s)": ramp_up,
            "not_ready transitions while connecting": before,
            "hub CPU % in the steady window (one core = 100)": cpu,
            "not_ready transitions in the window": flaps,
            "nodes ready at the end": ready_at_end,
            "all stayed ready": "yes" if not flaps and ready_at_end == args.sim_nodes else "no",
            "reconnects": sum(n["connects"] - 1 for n in nodes),
            "failed connection attempts": sum(n["failures"] for n in nodes),
            "error frames from the hub": sum(n["received"].get("error", 0) for n in nodes),
        }
    except BenchError:
        keep_logs(system.tmp)
        raise
    finally:
        system.close()


# Report


def fmt(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value != value:  # NaN: nothing to measure
        return "-"
    if isinstance(value, int) or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.1f}" if abs(value) >= 10 else f"{value:,.2f}"


def spread(values: list[Any]) -> str:
    numbers = [v for v in values if not isinstance(v, str)]
    if len(numbers) != len(values):  # text figures: show each round's
        return " / ".join(dict.fromkeys(str(v) for v in values))
    if len(values) == 1:
        return fmt(values[0])
    median = statistics.median(values)
    if all(isinstance(v, int) for v in values) and float(median).is_integer():
        median = int(median)  # counts stay counts
    return " / ".join(fmt(v) for v in (min(values), median, max(values)))


def report(runs: dict[str, list[Figures]]) -> None:
    names = [name for name, figures in runs.items() if figures]
    if not names:
        return
    runs = {name: runs[name] for name in names}
    rounds = len(runs[names[0]])
    what = "min / median / max" if rounds > 1 else "value"
    head = [f"{name} ({what})" for name in names]
    ratio = names == ["Hivemind", "Celery"]
    print("\n## Results\n")
    print("| figure | " + " | ".join(head) + (" | Hivemind / Celery (median) |" if ratio else " |"))
    print("|---" * (len(head) + 1 + ratio) + "|")
    keys = list(dict.fromkeys(k for figures in runs.values() for k in figures[0]))
    for key in keys:
        cells = [spread([f[key] for f in runs[n]]) if key in runs[n][0] else "" for n in names]
        line = f"| {key} | " + " | ".join(cells)
        if ratio:
            line += " | " + _ratio([runs[n] for n in names], key)
        print(line + " |")


def _ratio(runs: list[list[Figures]], key: str) -> str:
    if not (key.endswith("tasks/s") or key.startswith("submit→done")):
        return ""  # only rates and latencies compare across the two systems
    if not all(key in r[0] for r in runs):
        return ""
    a, b = (statistics.median(f[key] for f in r) for r in runs)
    return f"{a / b:.3g}x" if b else ""


def main() -> int:
    args = parse_args()
    # Ctrl-C (even when started in the background, where SIGINT is inherited ignored) and a
    # supervisor's SIGTERM both stop every child and remove the temporary files.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if (args.pg or args.hubs > 1) and not reachable(REDIS_HOST, REDIS_PORT):
        raise SystemExit(f"bench: error: no Redis at {REDIS_HOST}:{REDIS_PORT}")
    print_config(args)
    runs: dict[str, list[Figures]] = {"Hivemind": []}
    if args.peer:
        runs["Celery"] = []
    try:
        for r in range(1, args.rounds + 1):
            # Interleaved A/B/A/B: a machine that slows down over time hurts both alike.
            if args.sim_nodes:
                runs["Hivemind"].append(_timed(f"round {r}: simulated fleet", fleet_round, args))
                continue
            runs["Hivemind"].append(_timed(f"round {r}: Hivemind", hivemind_round, args))
            if args.peer:
                runs["Celery"].append(_timed(f"round {r}: Celery", celery_round, args))
    except BenchError as exc:
        report(runs)  # the rounds that did finish still count
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    report(runs)
    return 0


def _timed(
    label: str, run: Callable[[argparse.Namespace], Figures], args: argparse.Namespace
) -> Figures:
    started = time.monotonic()
    figures = run(args)
    rate = figures.get("tasks/s")
    extra = f", {rate:.1f} tasks/s" if isinstance(rate, float) else ""
    print(f"- {label}: {time.monotonic() - started:.0f} s{extra}", flush=True)
    return figures


if __name__ == "__main__":
    sys.exit(main())
