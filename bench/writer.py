"""Writer benchmark: the hub's CPU per task in its database writes, in one process.

The end-to-end benchmark (``bench/e2e.py``) shows the hub's CPU per task; most of it is the
runtime's writer applying the hot transitions. This replays what the writer is handed for
``--tasks`` golem tasks on a fresh SQLite database, with no network and no event loop: each
batch holds ``--batch`` submissions (one call each, as POSTs arrive) and ``--batch`` calls of
every later transition of earlier tasks (routed and bound, in one batch as the runtime queues
them; running; finished with its last progress report, as the hub writes a short task's end),
all applied by the writer's own ``_apply``, as a busy hub's drain applies them. It prints the
CPU milliseconds per task of each transition (its many-at-once form, timed around the call),
of what is left of the batches (the transaction, the commit, the after-commit hooks) and in
all, so a change to the hot path can be measured in seconds, and the statements sent to the
database per task (savepoints included): on PostgreSQL (``--pg``, a fresh database) each one
is a round trip the writer waits for, so the wall time per task is printed too.

Run: ``.venv/bin/python bench/writer.py [--tasks 3000] [--batch 8] [--pg] [--profile]``.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
import uuid
from collections import defaultdict, deque
from contextlib import nullcontext
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from e2e_support import pg_admin  # noqa: E402 - beside this file, after the path set-up

# The stages a task goes through in one batch, batch after batch: a golem task's routing and
# bind share one, as the runtime queues them in the same step (DESIGN §10).
STEPS = (("store",), ("routed", "bind"), ("running",), ("finish",))
STAGES = tuple(stage for step in STEPS for stage in step)
# What a batch costs beyond its stages' statements: the transaction, its commit and the
# after-commit hooks (board events, announced attempts).
COMMIT = "transaction, commit, hooks"


def _setup(data_dir: str, pg_name: str) -> None:
    os.environ.update(HIVEMIND_DATA_DIR=data_dir, HIVEMIND_LOG_LEVEL="WARNING")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hivemind_web.settings")
    os.environ.pop("DATABASE_URL", None)
    if pg_name:
        pg_admin(f'CREATE DATABASE "{pg_name}"')
        os.environ["DATABASE_URL"] = f"postgresql://postgres@127.0.0.1:5432/{pg_name}"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _calls(stage: str, sid: str, node: str, epoch: int) -> tuple[Any, dict[str, Any]]:
    from executor_core.types import ExecuteRequest, ExecutionStrategy
    from hivemind_web.hub.services import submission, tasks

    if stage == "store":
        request = ExecuteRequest(
            agent_id="echo", session_id="validation", input="hi", strategy=ExecutionStrategy.GOLEM
        )
        return submission.tasks_store, {"actor": None, "requests": [request]}
    common = {"session_id": sid, "attempt": 1}
    if stage == "routed":
        return tasks.task_mark_routed, {**common, "route": "golem", "reason": "", "owner": "b"}
    if stage == "bind":
        return tasks.task_bind, {**common, "node_name": node, "reason": "least loaded"}
    if stage == "running":
        return tasks.task_mark_running, {**common, "node_name": node, "epoch": epoch}
    return tasks.task_finish, {
        **common,
        "status": "succeeded",
        "output": "hi",
        "node_name": node,
        "epoch": epoch,
        "progress": {"pct": 100.0, "message": "", "node": node},
    }


def _timed(cpu: dict[str, float]) -> dict[Any, Any]:
    """The writer's many-at-once forms, each charging the CPU time it takes to its stage."""
    from hivemind_web.hub.execution.batching import BATCHED

    stage_of = {_calls(stage, "", "", 1)[0]: stage for stage in STAGES}
    forms = dict(BATCHED)
    for fn, stage in stage_of.items():
        many = BATCHED[fn].many

        def timed(calls: list[dict[str, Any]], many: Any = many, stage: str = stage) -> Any:
            t0 = time.thread_time()
            try:
                return many(calls)
            finally:
                cpu[stage] += time.thread_time() - t0

        forms[fn] = BATCHED[fn]._replace(many=timed)
    return forms


def run(count: int, size: int, *, counting: bool = False) -> tuple[dict[str, float], int, float]:
    """Apply the writer's batches for ``count`` tasks: CPU seconds by stage, the statements
    sent (when ``counting``: an execute wrapper sends every statement through Django's own
    cursor, which costs more than the hot path's, so a counted run is not a timed one), and
    the wall seconds spent applying."""
    from django.db import connection

    from hivemind_web.hub import intents
    from hivemind_web.hub.execution.writer import _apply, _Call
    from hivemind_web.hub.models import Node

    nodes = []
    for i in range(2):
        node = Node.objects.create(
            name=f"bench-{uuid.uuid4().hex[:6]}-{i}",
            status=Node.Status.READY,
            capacity=1_000_000,
            agents=["echo"],
            connection_epoch=1,
        )
        nodes.append(node)
    started: list[str] = []
    port = _Collect(started)
    intents.install(port)
    cpu: dict[str, float] = defaultdict(float)
    forms = _timed(cpu)
    # pipeline[d] holds the tasks submitted d + 1 batches ago: they are at step d + 1.
    pipeline: deque[list[str]] = deque(maxlen=len(STEPS) - 1)
    submitted, statements, wall = 0, [0], 0.0

    def count_statement(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        statements[0] += 1
        return execute(sql, params, many, context)

    while submitted < count or any(pipeline):
        n = min(size, count - submitted)
        batch = [("store", _calls("store", "", "", 1)) for _ in range(n)]
        submitted += n
        for depth, cohort in enumerate(pipeline, start=1):
            for j, sid in enumerate(cohort):
                node = nodes[j % 2]
                for stage in STEPS[depth]:
                    batch.append((stage, _calls(stage, sid, node.name, 1)))
        calls = [_Call(fn, (), kwargs, None) for _, (fn, kwargs) in batch]
        staged = sum(cpu.values())
        t0, w0 = time.thread_time(), time.perf_counter()
        with connection.execute_wrapper(count_statement) if counting else nullcontext():
            outcomes = _apply(calls, forms)
        cpu[COMMIT] += (time.thread_time() - t0) - (sum(cpu.values()) - staged)
        wall += time.perf_counter() - w0
        for (stage, _), (ok, value) in zip(batch, outcomes, strict=True):
            if not ok or value is False or value is None:
                raise SystemExit(f"{stage} did not happen: {value!r}")
        pipeline.appendleft(started[:])
        started.clear()
    intents.uninstall(port)
    return dict(cpu), statements[0], wall


class _Collect:
    """Stands in for the runtime: keeps the attempts the services announce."""

    def __init__(self, started: list[str]) -> None:
        self.started = started

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None

    def start_attempt(self, spec: Any) -> None:
        self.started.append(spec.session_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=8, help="calls of each stage per batch")
    parser.add_argument("--pg", action="store_true", help="a fresh PostgreSQL database")
    parser.add_argument("--profile", action="store_true", help="print a cProfile instead")
    args = parser.parse_args()
    pg_name = f"hivemind_writer_bench_{uuid.uuid4().hex[:10]}" if args.pg else ""
    try:
        with tempfile.TemporaryDirectory(prefix="hivemind-writer-bench-") as tmp:
            _setup(tmp, pg_name)
            run(min(args.tasks, 200), args.batch)  # warm up: caches, the first statements
            profile = cProfile.Profile() if args.profile else None
            if profile:
                profile.enable()
            cpu, _, wall = run(args.tasks, args.batch)
            if profile:
                profile.disable()
                pstats.Stats(profile).sort_stats("cumulative").print_stats(45)
                return
            _, statements, _ = run(args.tasks, args.batch, counting=True)
            from django.db import connection

            connection.close()
    finally:
        if pg_name:
            pg_admin(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
    total = sum(cpu.values())
    database = "PostgreSQL" if args.pg else "SQLite"
    print(f"{args.tasks} tasks on {database}, {args.batch} calls of each stage per batch")
    print("| stage | CPU ms/task |\n|---|---|")
    for stage in (*STAGES, COMMIT):
        print(f"| {stage} | {cpu.get(stage, 0.0) * 1000 / args.tasks:.3f} |")
    print(f"| **all** | **{total * 1000 / args.tasks:.3f}** |")
    print(f"\nstatements per task: {statements / args.tasks:.2f}")
    print(f"wall ms per task: {wall * 1000 / args.tasks:.3f}")


if __name__ == "__main__":
    main()
