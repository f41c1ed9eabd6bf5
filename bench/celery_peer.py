"""The peer for ``bench/e2e.py --peer celery``: the same no-op workload through Celery + Redis.

Also the worker's Celery app: ``celery -A celery_peer worker`` (with ``bench/`` on the path and
``CELERY_PEER_URL`` naming the round's Redis) imports ``app`` from here.

Shape, chosen to mirror Hivemind's: one worker process per Hivemind node, each with the node's
capacity as its concurrency, in the ``threads`` pool. A node runs its agents in one process
(asyncio), so threads compare like with like; prefork would add a process hop per task and
16 forked children per worker on a 2-core machine.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from celery import Celery, group
from celery.result import ResultSet
from e2e_support import BENCH, PY, BenchError, Procs, free_port, reachable, wait_until

ENV_URL = "CELERY_PEER_URL"
TASK = "bench.echo"


def make_app(url: str) -> Celery:
    app = Celery("hivemind_bench_peer", broker=url, backend=url)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        result_expires=600,
    )

    app.task(name=TASK)(echo)
    return app


def echo(text: str) -> float:
    """The no-op agent; the time it finished is the "done" of submit→done."""
    return time.time()


app = make_app(os.environ.get(ENV_URL, "redis://127.0.0.1:6379/15"))


@dataclass
class ClientLog:
    """What one client thread submitted: (submit time, result) pairs, and its wall times."""

    sent: list[tuple[float, Any]] = field(default_factory=list)
    first: float = 0.0
    last_accepted: float = 0.0
    done: list[float] = field(default_factory=list)
    error: str = ""


class CeleryPeer:
    """A private ``redis-server`` and ``workers`` Celery workers for one round."""

    def __init__(self, procs: Procs, workers: int, concurrency: int) -> None:
        self.procs = procs
        self.workers, self.concurrency = workers, concurrency
        self.url = ""

    def start(self) -> None:
        port = free_port()
        self.url = f"redis://127.0.0.1:{port}/0"
        self.procs.start(
            "redis",
            [
                *("redis-server", "--port", str(port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--daemonize", "no"),
            ],
            dict(os.environ),
        )
        wait_until(
            lambda: reachable("127.0.0.1", port), timeout=20, what="redis-server", procs=self.procs
        )
        env = {**os.environ, ENV_URL: self.url, "PYTHONPATH": str(BENCH)}
        for i in range(self.workers):
            argv = [PY, "-m", "celery", "-A", "celery_peer", "worker", "--pool", "threads"]
            argv += ["-c", str(self.concurrency), "-n", f"w{i + 1}@%h", "-l", "warning"]
            argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
            self.procs.start(f"celery-worker-{i + 1}", argv, env)
        probe = make_app(self.url)
        wait_until(
            lambda: len(probe.control.ping(timeout=0.5)) >= self.workers,
            timeout=60,
            what=f"{self.workers} Celery workers",
            procs=self.procs,
        )

    def run(
        self, tasks: int, mode: str, clients: int, batch: int, pause: float = 0.0
    ) -> dict[str, float]:
        """Submit ``tasks`` echo tasks and wait for every result (each client waiting ``pause``
        seconds after each submission); the round's figures."""
        units: list[range] = [
            range(i, min(i + (batch if mode == "batch" else 1), tasks))
            for i in range(0, tasks, batch if mode == "batch" else 1)
        ]
        logs = [ClientLog() for _ in range(clients)]
        threads = [
            threading.Thread(target=self._client, args=(units[i::clients], logs[i], pause))
            for i in range(clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        failed = [log.error for log in logs if log.error]
        if failed:
            raise BenchError(f"a Celery client failed: {failed[0]}")
        sent = [pair for log in logs for pair in log.sent]
        done = [d for log in logs for d in log.done]
        latencies = [(d - t) * 1000 for (t, _), d in zip(sent, done, strict=True)]
        first = min(log.first for log in logs if log.sent)
        accepted = max(log.last_accepted for log in logs)
        return {
            "tasks": len(sent),
            "succeeded": len(done),
            "elapsed": max(done) - first,
            "submit_elapsed": accepted - first,
            "done_ms": latencies,
        }

    def _client(self, units: list[range], log: ClientLog, pause: float) -> None:
        # One app per thread: the Redis result backend's pub/sub is not thread-safe
        # (celery/celery#4363, #6335).
        client = make_app(self.url)
        echo = client.tasks[TASK]
        try:
            log.first = time.time()
            for unit in units:
                t = time.time()
                if len(unit) == 1:
                    log.sent.append((t, echo.delay(f"task {unit[0]}")))
                else:
                    results = group(echo.s(f"task {i}") for i in unit).apply_async()
                    log.sent += [(t, r) for r in results.results]
                log.last_accepted = time.time()
                if pause:
                    time.sleep(pause)
            outcome = ResultSet([r for _, r in log.sent], app=client)
            log.done = outcome.join_native(timeout=600, propagate=True)
        except Exception as exc:  # reported by the caller, after every thread has stopped
            log.error = f"{type(exc).__name__}: {exc}"
        finally:
            client.close()
