"""Plumbing for ``bench/e2e.py``: child processes, a keep-alive API client, a hub + nodes.

Every child process is started through ``Procs``, which stops them all (even after Ctrl-C or
an exception) and points at the child's log when one dies during startup. Children run in
their own session, so a Ctrl-C reaches only the bench, which then stops them in order.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
PY = sys.executable
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
PAGE = 500  # the API's largest page_size
T = TypeVar("T")


class BenchError(Exception):
    """Something the bench needs did not work: reported in one line, exit status 1."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def epoch(iso: str | None) -> float | None:
    """Seconds since the epoch of one of the API's ISO-8601 timestamps."""
    return datetime.fromisoformat(iso).timestamp() if iso else None


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(
                f"{self.name} exited with status {self.proc.returncode}; its log:\n{self.tail()}"
            )


@dataclass
class Procs:
    """The children of one round; ``stop_all`` ends them newest first (nodes before hubs)."""

    log_dir: Path
    children: list[Child] = field(default_factory=list)

    def start(
        self, name: str, argv: list[str], env: dict[str, str], *, stdin: bool = False
    ) -> Child:
        log = self.log_dir / f"{name}.log"
        try:
            with open(log, "ab") as out:
                proc = subprocess.Popen(
                    argv,
                    cwd=REPO,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                    start_new_session=True,
                )
        except OSError as exc:
            raise BenchError(f"could not start {name} ({argv[0]}): {exc}") from None
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def check(self) -> None:
        for child in self.children:
            child.check()

    def stop_all(self, grace: float = 10.0) -> None:
        for child in reversed(self.children):
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
            # One at a time: nodes drain toward a hub that is still up.
            try:
                child.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()
        self.children.clear()


def wait_until(
    predicate: Callable[[], T | None], *, timeout: float, what: str, procs: Procs | None = None
) -> T:
    """Poll ``predicate`` until it returns something truthy; a dead child fails at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if procs is not None:
            procs.check()
        try:
            result = predicate()
        except OSError:
            result = None
        if result:
            return result
        time.sleep(0.2)
    raise BenchError(f"timed out after {timeout:g}s waiting for {what}")


class Api:
    """JSON over keep-alive HTTP/1.1: one connection per thread and hub, token auth."""

    def __init__(self, urls: list[str], token: str = "") -> None:
        self.hosts = [url.removeprefix("http://") for url in urls]
        self.token = token
        self._local = threading.local()

    def _conn(self, hub: int) -> http.client.HTTPConnection:
        conns = self._local.__dict__.setdefault("conns", {})
        if hub not in conns:
            conns[hub] = http.client.HTTPConnection(self.hosts[hub], timeout=60)
        return conns[hub]

    def call(self, method: str, path: str, body: Any = None, *, hub: int = 0) -> tuple[int, Any]:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json", "Connection": "keep-alive"}
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        for attempt in (1, 2):
            conn = self._conn(hub)
            try:
                conn.request(method, path, body=payload, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                break
            except (http.client.HTTPException, ConnectionError):
                # The server closed an idle keep-alive connection: reconnect once.
                conn.close()
                self._local.conns.pop(hub)
                if attempt == 2:
                    raise
        try:
            return response.status, json.loads(raw) if raw else None
        except ValueError:
            return response.status, raw.decode(errors="replace")

    def get(self, path: str, *, hub: int = 0) -> Any:
        status, body = self.call("GET", path, hub=hub)
        if status != 200:
            raise BenchError(f"GET {path} answered {status}: {str(body)[:300]}")
        return body

    def list_all(self, path: str, *, hub: int = 0) -> list[dict[str, Any]]:
        """Every row of a paginated list, PAGE rows a request."""
        rows: list[dict[str, Any]] = []
        sep = "&" if "?" in path else "?"
        page = 1
        while True:
            body = self.get(f"{path}{sep}page_size={PAGE}&page={page}", hub=hub)
            rows += body["results"]
            if not body.get("next"):
                return rows
            page += 1


# One ``manage.py shell`` does all the setup against the round's database (each start of
# Django costs a second or more): an admin with an API token, logged-in sessions for the
# board clients (so no login form round trips) and node records with tokens for the
# simulated fleet (registering 1,000 nodes over HTTP would dominate the round).
SETUP_SNIPPET = """
import json
from importlib import import_module
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import Group, User
from django.db import transaction
from hivemind_web.hub.services.api_tokens import api_token_create
from hivemind_web.hub.services.nodes import node_create

user = User.objects.create_superuser("bench", "", "bench-" + {password!r})
user.groups.add(Group.objects.get(name="admin"))
store = import_module(settings.SESSION_ENGINE).SessionStore
sessions = []
for _ in range({sessions}):
    s = store()
    s[SESSION_KEY] = str(user.pk)
    s[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    s[HASH_SESSION_KEY] = user.get_session_auth_hash()
    s.create()
    sessions.append(s.session_key)
nodes = {{}}
with transaction.atomic():
    for i in range({sim_nodes}):
        name = "sim-%04d" % i
        nodes[name] = node_create(name=name, labels={{"sim": "true"}}, capacity=16)[1]
out = {{"token": api_token_create(user=user), "sessions": sessions, "nodes": nodes}}
open({out!r}, "w").write(json.dumps(out))
"""


@dataclass
class HubConfig:
    hubs: int = 1
    nodes: int = 2
    capacity: int = 16
    tasks: int = 2000
    pg: bool = False
    redis_db: int = 3
    board: int = 0
    sim_nodes: int = 0


@dataclass
class Credentials:
    token: str
    sessions: list[str]
    sim_nodes: dict[str, str]


class Hivemind:
    """One fresh system for one round: database, hub processes, node processes."""

    def __init__(self, cfg: HubConfig) -> None:
        self.cfg = cfg
        self.tmp = Path(tempfile.mkdtemp(prefix="hivemind-bench-"))
        self.procs = Procs(self.tmp)
        self.ports = [free_port() for _ in range(cfg.hubs)]
        self.urls = [f"http://127.0.0.1:{port}" for port in self.ports]
        self.hubs: list[Child] = []
        self.db_name = f"hivemind_bench_{uuid.uuid4().hex[:10]}" if cfg.pg else ""
        # PostgreSQL means the production shape, and several hubs need a shared layer.
        shared = cfg.pg or cfg.hubs > 1
        self.redis_prefix = f"hivemind-bench-{uuid.uuid4().hex[:8]}" if shared else ""
        self.join_token = "join-" + uuid.uuid4().hex
        self.env = self._env()

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HIVEMIND_")}
        env.pop("DJANGO_SETTINGS_MODULE", None)
        slots = max(1, self.cfg.nodes * self.cfg.capacity)
        env.update(
            HIVEMIND_DATA_DIR=str(self.tmp / "data"),
            HIVEMIND_JOIN_TOKEN=self.join_token,
            SECRET_KEY="bench-" + uuid.uuid4().hex,
            DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{self.db_name}"
            if self.db_name
            else "",
            HIVEMIND_HEARTBEAT_INTERVAL="1",
            # The local executor gets as many slots as the fleet, so local and golem compare
            # like for like, and a queue long enough that a burst is never refused.
            HIVEMIND_LOCAL_CONCURRENCY=str(slots),
            HIVEMIND_LOCAL_QUEUE_LIMIT=str(max(1000, self.cfg.tasks)),
            HIVEMIND_LOG_LEVEL="WARNING",
            PYTHONUNBUFFERED="1",
        )
        if self.redis_prefix:
            env["HIVEMIND_REDIS_URL"] = f"redis://{REDIS_HOST}:{REDIS_PORT}/{self.cfg.redis_db}"
            env["HIVEMIND_REDIS_PREFIX"] = self.redis_prefix
        return env

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [PY, "manage.py", *args], cwd=REPO, env=self.env, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise BenchError(f"manage.py {args[0]} failed:\n{result.stderr[-3000:]}")
        return result.stdout

    def prepare(self) -> Credentials:
        if self.db_name:
            pg_admin(f'CREATE DATABASE "{self.db_name}"')
        self.manage("migrate", "--verbosity", "0")
        out = self.tmp / "setup.json"
        snippet = SETUP_SNIPPET.format(
            password=uuid.uuid4().hex,
            sessions=self.cfg.board,
            sim_nodes=self.cfg.sim_nodes,
            out=str(out),
        )
        self.manage("shell", "-c", snippet)
        data = json.loads(out.read_text())
        return Credentials(data["token"], data["sessions"], data["nodes"])

    def start_hubs(self) -> None:
        for i, port in enumerate(self.ports):
            argv = [PY, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
            env = {**self.env, "HIVEMIND_INSTANCE": f"bench-hub-{i + 1}"}
            self.hubs.append(
                self.procs.start(f"hub-{i + 1}", [*argv, "hivemind_web.asgi:application"], env)
            )
        for url in self.urls:
            wait_until(
                lambda url=url: _healthy(url),
                timeout=60,
                what=f"the hub on {url}",
                procs=self.procs,
            )

    def start_nodes(self, api: Api) -> None:
        """Real ``hivemind-node`` processes, split between the hubs; wait until all are ready."""
        for i in range(self.cfg.nodes):
            name = f"node-{i + 1}"
            argv = [
                *(PY, "-m", "executor_core.node.cli", "--hub", self.urls[i % self.cfg.hubs]),
                *("--name", name, "--capacity", str(self.cfg.capacity)),
                *("--join-token", self.join_token, "--state-dir", str(self.tmp / "nodes")),
                *("--heartbeat", "1", "--max-backoff", "1", "--log-level", "warning"),
            ]
            self.procs.start(name, argv, self.env)
        wait_until(
            lambda: len(ready_nodes(api)) >= self.cfg.nodes,
            timeout=60,
            what=f"{self.cfg.nodes} ready nodes",
            procs=self.procs,
        )

    def hub_cpu_seconds(self) -> float:
        import psutil

        total = 0.0
        for hub in self.hubs:
            times = psutil.Process(hub.proc.pid).cpu_times()
            total += times.user + times.system
        return total

    def close(self) -> None:
        try:
            self.procs.stop_all()
        finally:
            if self.db_name:
                pg_admin(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            if self.redis_prefix:
                _redis_forget(self.cfg.redis_db, self.redis_prefix)
            shutil.rmtree(self.tmp, ignore_errors=True)


def keep_logs(tmp: Path) -> None:
    """After a failed round, keep the children's logs (the temporary directory goes).

    Called before the children stop, so their logs show where they were stuck.
    """
    kept = Path(tempfile.mkdtemp(prefix="hivemind-bench-logs-"))
    for log in tmp.glob("*.log"):
        shutil.copy(log, kept)
    print(f"bench: the round's logs are kept in {kept}", file=sys.stderr)


def ready_nodes(api: Api) -> list[str]:
    return [n["name"] for n in api.list_all("/api/v1/nodes/") if n["status"] == "ready"]


def _healthy(url: str) -> bool:
    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=2)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    finally:
        conn.close()


def pg_admin(sql: str) -> None:
    """Run ``sql`` on the PostgreSQL server as its admin (create or drop a database)."""
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(sql)
    except psycopg.OperationalError as exc:
        raise BenchError(f"PostgreSQL at {PG_ADMIN_URL}: {exc}") from None


def _redis_forget(db: int, prefix: str) -> None:
    """Delete the round's channel-layer keys from the shared Redis."""
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
