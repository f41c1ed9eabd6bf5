"""``manage.py hive``: the whole embedded system in one command.

Migrates, creates an admin user on first run, serves the hub on daphne and starts N local
Golem node agents that join with the hub's join token. Ctrl-C stops them all.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from hivemind_web.config import persistent_secret
from hivemind_web.serving import DAPHNE_LIMITS

# Labels that make the affinity and selector demo interesting.
DEMO_LABELS = [
    "zone=a,gpu=true,tier=large",
    "zone=b,gpu=false,tier=small",
    "zone=a,gpu=false,tier=small",
    "zone=b,gpu=true,tier=large",
]
START_TIMEOUT = 30.0


class Command(BaseCommand):
    help = "Run the embedded Hivemind: migrations, the hub on daphne, and N local node agents."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--nodes", type=int, default=2, help="local node agents (0..16)")
        parser.add_argument("--capacity", type=int, default=2, help="capacity of each node")

    def handle(
        self, *args: Any, host: str, port: int, nodes: int, capacity: int, **kw: Any
    ) -> None:
        if not 0 <= nodes <= 16:
            raise CommandError("--nodes must be between 0 and 16")
        if not 1 <= port <= 65535:
            raise CommandError("--port must be between 1 and 65535")
        # A supervisor's SIGTERM stops everything as cleanly as Ctrl-C does.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        call_command("migrate", interactive=False, verbosity=0)
        self._ensure_admin()
        env = os.environ.copy()
        join_token = settings.HIVEMIND["JOIN_TOKEN"] or persistent_secret(
            settings.DATA_DIR / "join_token"
        )
        # Through the environment, never argv: a command line is visible to all in `ps`.
        env["HIVEMIND_JOIN_TOKEN"] = join_token
        # Room for this command's own nodes on top of the usual registration limit.
        env.setdefault("HIVEMIND_REGISTER_RATE", f"{10 + nodes}/min")
        hub_url = f"http://{host}:{port}"
        procs: list[subprocess.Popen[bytes]] = []
        try:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "daphne",
                        "-b",
                        host,
                        "-p",
                        str(port),
                        *DAPHNE_LIMITS,
                        "hivemind_web.asgi:application",
                    ],
                    env=env,
                )
            )
            self._wait_healthy(hub_url, procs[0])
            state_dir = Path(settings.DATA_DIR) / "nodes"
            for i in range(nodes):
                procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "executor_core.node.cli",
                            "--hub",
                            hub_url,
                            "--name",
                            f"node-{i + 1}",
                            "--labels",
                            DEMO_LABELS[i % len(DEMO_LABELS)],
                            "--capacity",
                            str(capacity),
                            "--state-dir",
                            str(state_dir),
                        ],
                        env=env,
                    )
                )
            self.stdout.write(
                self.style.SUCCESS(
                    f"Hivemind is up at {hub_url}/ with {nodes} node(s). Ctrl-C stops it."
                )
            )
            while all(p.poll() is None for p in procs):
                time.sleep(0.5)
            raise CommandError("a hub or node process exited; stopping the rest")
        except KeyboardInterrupt:
            self.stdout.write("stopping…")
        finally:
            for proc in reversed(procs):  # nodes first (they drain), the hub last
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in reversed(procs):
                try:
                    proc.wait(timeout=35)
                except subprocess.TimeoutExpired:
                    proc.kill()

    def _ensure_admin(self) -> None:
        users = get_user_model()
        if users.objects.filter(is_superuser=True).exists():
            return
        password = os.environ.get("HIVEMIND_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        user = users.objects.create_superuser("admin", "", password)
        user.groups.add(Group.objects.get(name="admin"))
        if "HIVEMIND_ADMIN_PASSWORD" not in os.environ:
            self.stdout.write(
                self.style.WARNING(f"Created user 'admin' with password {password} (shown once).")
            )

    def _wait_healthy(self, hub_url: str, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise CommandError("the hub failed to start (see its output above)")
            try:
                with urllib.request.urlopen(f"{hub_url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise CommandError(f"the hub did not answer on {hub_url} within {START_TIMEOUT:g}s")
