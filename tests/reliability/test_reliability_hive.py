"""``manage.py hive``: the embedded system in one command, stopped with Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from helpers import submit, wait_task
from support.live import REPO, LiveHub, free_port, reachable, wait_for

pytestmark = pytest.mark.slow


def test_hive_runs_the_hub_and_its_nodes_and_stops_them_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "HIVEMIND_DATA_DIR": str(tmp_path),
        "HIVEMIND_HEARTBEAT_INTERVAL": "0.5",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("HIVEMIND_ADMIN_PASSWORD", None)
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the tests' own settings are not the product's
    log = open(tmp_path / "hive.log", "wb")  # noqa: SIM115 - owned by the process
    hive = subprocess.Popen(
        [sys.executable, "manage.py", "hive", "--port", str(port), "--nodes", "2"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        hub = LiveHub(tmp_path)  # a handle on the same data dir, for its helpers
        hub.url, hub.env = f"http://127.0.0.1:{port}", env
        wait_for(
            lambda: "password" in (tmp_path / "hive.log").read_text(),
            timeout=60,
            what="the first-run admin password",
        )
        assert "Created user 'admin'" in (tmp_path / "hive.log").read_text()
        token = hub.manage("api_token", "admin").strip()
        # The password is printed while the hub is still starting: its port opens after.
        wait_for(lambda: reachable("127.0.0.1", port), timeout=60, what="the hub's port")

        def nodes_ready() -> bool:
            status, body = hub.api("GET", "/api/v1/nodes/", token=token)
            return status == 200 and sorted(
                n["name"] for n in body["results"] if n["status"] == "ready"
            ) == ["node-1", "node-2"]

        wait_for(nodes_ready, timeout=60, what="both demo nodes ready")
        # The join token reaches the nodes through their environment: `ps` never shows it.
        join_token = (tmp_path / "join_token").read_text().strip()
        children = psutil.Process(hive.pid).children(recursive=True)
        assert len(children) >= 3
        assert not [p.pid for p in children if join_token in " ".join(p.cmdline())]
        task = submit(
            hub,
            token,
            agent_id="echo",
            input="gpu!",
            strategy="golem",
            node_selector={"gpu": "true"},
        )
        done = wait_task(hub, token, task["session_id"], "succeeded")
        assert (done["node"], done["output"]) == ("node-1", "gpu!")
    finally:
        hive.send_signal(signal.SIGINT)
        code = hive.wait(timeout=60)
        log.close()
    assert code == 0, (tmp_path / "hive.log").read_text()[-3000:]
    # Nothing is left running: the hub's port is free again.
    with pytest.raises(OSError):
        import urllib.request

        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
