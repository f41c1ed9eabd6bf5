"""Real processes for end-to-end tests: a daphne hub and hivemind-node agents.

The hub runs as ``daphne hivemind_web.asgi:application`` in a subprocess with its own data
directory (file-backed SQLite) or a PostgreSQL database, and short timings so failure tests
run in seconds. Nodes are ``python -m executor_core.node.cli`` subprocesses joining with the
hub's join token. Everything talks over loopback only.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hivemind_web.serving import DAPHNE_LIMITS

REPO = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"
SQLITE_NAME = "hivemind.sqlite3"  # the hub's database in its data dir (settings.DATABASES)

FAST_TIMINGS = {
    "HIVEMIND_HEARTBEAT_INTERVAL": "0.5",
    "HIVEMIND_HEARTBEAT_GRACE": "2",
    "HIVEMIND_LOST_AFTER": "4",
    "HIVEMIND_ASSIGN_TIMEOUT": "3",
    "HIVEMIND_PROGRESS_FLUSH": "0.1",
    # A stopped hub's local runs get this long to finish (tests of the stop set their own).
    "HIVEMIND_SHUTDOWN_GRACE": "3",
}
ROLE_PASSWORD = "correct-horse-battery"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(
    predicate: Callable[[], Any], *, timeout: float, interval: float = 0.1, what: str = "condition"
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# Databases made from the migrated template: their hubs need no migrate of their own.
MIGRATED_PG: set[str] = set()


def _pg_url(name: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def create_pg_database() -> str:
    """A fresh PostgreSQL database for hubs, already migrated (a copy of a template that
    ``manage.py migrate`` built once for this test run); returns its URL."""
    import psycopg

    name = f"hivemind_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{_migrated_pg_template()}"')
    MIGRATED_PG.add(_pg_url(name))
    return _pg_url(name)


@functools.cache
def _migrated_pg_template() -> str:
    import psycopg

    name = f"hivemind_template_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    atexit.register(drop_pg_database, _pg_url(name))
    _migrate_once(_pg_url(name))
    return name


def _migrate_once(database_url: str) -> Path:
    """Run ``manage.py migrate`` on ``database_url`` (empty: SQLite in a new data dir)."""
    data_dir = Path(tempfile.mkdtemp(prefix="hivemind-migrated-"))
    atexit.register(shutil.rmtree, data_dir, True)
    LiveHub(data_dir, database_url=database_url).manage("migrate", "--verbosity", "0")
    return data_dir


def drop_pg_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@functools.cache
def migrated_sqlite() -> Path:
    """A SQLite database that ``manage.py migrate`` built once for this test run: each SQLite
    hub starts from a copy of it (a migrate costs every hub ~4 s, a copy ~10 ms)."""
    return _migrate_once("") / SQLITE_NAME


def copy_sqlite(source: Path, target: Path) -> None:
    """Copy through SQLite's backup API: a plain file copy could miss what sits in the WAL."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


@functools.cache
def role_password_hash() -> str:
    """``ROLE_PASSWORD`` hashed once as the hub hashes passwords (Django's default hasher):
    users get it as is instead of paying ~0.4 s of hashing each."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    hasher = PBKDF2PasswordHasher()
    return hasher.encode(ROLE_PASSWORD, hasher.salt())


class LiveHub:
    """One hub process. ``restart()`` keeps its database: state must survive."""

    def __init__(
        self,
        data_dir: Path,
        *,
        database_url: str = "",
        redis_url: str = "",
        extra_env: dict[str, str] | None = None,
        instance: str = "hub-test",
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.join_token = "join-" + uuid.uuid4().hex
        self.env = {
            **os.environ,
            **FAST_TIMINGS,
            "HIVEMIND_DATA_DIR": str(data_dir),
            "HIVEMIND_JOIN_TOKEN": self.join_token,
            # Tests start many nodes at once from one address; the limit has its own test.
            "HIVEMIND_REGISTER_RATE": "1000/min",
            "HIVEMIND_INSTANCE": instance,
            "SECRET_KEY": "test-secret-key-" + uuid.uuid4().hex,
            "DATABASE_URL": database_url,
            "HIVEMIND_REDIS_URL": redis_url,
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        self.env.pop("DJANGO_SETTINGS_MODULE", None)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / f"hub-{self.port}.log"

    def manage(self, *args: str, input: str | None = None) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            input=input,
            timeout=120,
        )
        if result.returncode != 0:
            raise AssertionError(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout

    def start(self, *, migrate: bool = True) -> LiveHub:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if migrate:
            self._migrate()
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                *DAPHNE_LIMITS,
                "hivemind_web.asgi:application",
            ],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._healthy, timeout=30, what=f"the hub on {self.url}")
        return self

    def _migrate(self) -> None:
        url, database = self.env["DATABASE_URL"], self.data_dir / SQLITE_NAME
        if not url and not database.exists():
            copy_sqlite(migrated_sqlite(), database)
        elif url not in MIGRATED_PG:
            self.manage("migrate", "--verbosity", "0")

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"the hub exited:\n{self.log()}")
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except FileNotFoundError:
            return ""

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> LiveHub:
        self.stop()
        return self.start(migrate=False)

    def create_user(self, username: str, role: str | None) -> str:
        """A user in the group ``role`` (viewer/operator/admin, or None); returns an API token."""
        return self.create_users({username: role})[username]

    def create_users(self, roles: dict[str, str | None]) -> dict[str, str]:
        """Several users in one ``manage.py shell`` (each start costs a second or more)."""
        script = (
            "import json\n"
            "from django.contrib.auth.models import Group, User\n"
            "from hivemind_web.hub.services.api_tokens import api_token_create\n"
            "tokens = {}\n"
            f"for name, role in {roles!r}.items():\n"
            "    u, _ = User.objects.get_or_create(username=name)\n"
            f"    u.password = {role_password_hash()!r}; u.save()\n"
            "    if role: u.groups.add(Group.objects.get(name=role))\n"
            "    tokens[name] = api_token_create(user=u)\n"
            "print(json.dumps(tokens))\n"
        )
        return json.loads(self.manage("shell", "-c", script).strip().splitlines()[-1])

    def api(
        self, method: str, path: str, *, token: str | None = None, body: Any = None
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Token {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, raw.decode(errors="replace")


class NodeProcess:
    """A real ``hivemind-node`` process."""

    def __init__(
        self,
        hub: LiveHub,
        name: str,
        *,
        labels: str = "",
        capacity: int = 2,
        agents: str | None = None,
        state_dir: Path | None = None,
        heartbeat: float = 0.5,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.hub, self.name = hub, name
        self.env = {**hub.env, **(env or {})}
        self.state_dir = state_dir or hub.data_dir / "nodes"
        self.args = [
            sys.executable,
            "-m",
            "executor_core.node.cli",
            "--hub",
            hub.url,
            "--name",
            name,
            "--capacity",
            str(capacity),
            "--state-dir",
            str(self.state_dir),
            "--heartbeat",
            str(heartbeat),
            "--max-backoff",
            "1",
        ]
        if labels:
            self.args += ["--labels", labels]
        if agents:
            self.args += ["--agents", agents]
        self.args += list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        # Two processes of one node (tests of identity) keep separate state dirs and logs.
        suffix = "" if state_dir is None else f"-{self.state_dir.name}"
        self.log_path = hub.data_dir / f"node-{name}{suffix}.log"

    def start(self) -> NodeProcess:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            self.args, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        return self

    def wait_ready(self, token: str, timeout: float = 20) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"node {self.name} exited:\n{self.log()}")
            status, body = self.hub.api("GET", f"/api/v1/nodes/{self.name}/", token=token)
            return status == 200 and body["status"] == "ready"

        wait_for(ready, timeout=timeout, what=f"node {self.name} ready")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except FileNotFoundError:
            return ""

    def stats(self) -> dict[str, Any]:
        path = self.state_dir / f"{self.name}.stats.json"
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def terminate(self, timeout: float = 40) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)
