"""``hivemind-node`` flags, credentials and registration."""

from __future__ import annotations

import json
import stat
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from node_support import FakeHub, node_command
from test_node_runs import eventually

from executor_core.node.cli import main

HUB = ["--hub", "http://127.0.0.1:8000"]


@pytest.fixture(autouse=True)
def no_credentials_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HIVEMIND_NODE_TOKEN", raising=False)
    monkeypatch.delenv("HIVEMIND_JOIN_TOKEN", raising=False)


BAD_FLAGS = [
    (["--name", "n1", "--token", "t"], "the following arguments are required: --hub"),
    (["--hub", "ftp://h", "--name", "n1", "--token", "t"], "must be an http:// or https:// URL"),
    (["--hub", "http://", "--name", "n1", "--token", "t"], "has no host"),
    (["--hub", "http://u:p@h", "--name", "n1", "--token", "t"], "must not carry credentials"),
    ([*HUB, "--token", "t"], "the following arguments are required: --name"),
    ([*HUB, "--name", "Node_1", "--token", "t"], "must be a DNS label"),
    ([*HUB, "--name", "n" * 64, "--token", "t"], "must be a DNS label"),
    ([*HUB, "--name=-n1", "--token", "t"], "must be a DNS label"),
    ([*HUB, "--name", "n1", "--labels", "zone", "--token", "t"], "is not of the form key=value"),
    ([*HUB, "--name", "n1", "--labels", "zone=eu,zone=us", "--token", "t"], "is given twice"),
    ([*HUB, "--name", "n1", "--labels", "z=-bad-", "--token", "t"], "value '-bad-'"),
    ([*HUB, "--name", "n1", "--capacity", "0", "--token", "t"], "between 1 and 1024, got 0"),
    ([*HUB, "--name", "n1", "--capacity", "1025", "--token", "t"], "between 1 and 1024"),
    ([*HUB, "--name", "n1", "--capacity", "two", "--token", "t"], "must be an integer"),
    ([*HUB, "--name", "n1", "--agents", "echo,nope", "--token", "t"], "unknown agent(s) nope"),
    ([*HUB, "--name", "n1", "--agents", " , ", "--token", "t"], "name at least one agent"),
    ([*HUB, "--name", "n1", "--capabilities", "gpu inference", "--token", "t"], "'-', '_'"),
    (
        [*HUB, "--name", "n1", "--capabilities", ",".join(f"c{i}" for i in range(65))],
        "at most 64 names",
    ),
    ([*HUB, "--name", "n1", "--heartbeat", "0", "--token", "t"], "must be more than 0"),
    ([*HUB, "--name", "n1", "--drain-timeout", "-1", "--token", "t"], "must be 0 and at most"),
    ([*HUB, "--name", "n1", "--max-backoff", "soon", "--token", "t"], "expected seconds"),
    ([*HUB, "--name", "n1", "--token", "t", "--join-token", "j"], "not allowed with argument"),
    ([*HUB, "--name", "n1"], "no credentials: pass --token or --join-token"),
]


@pytest.mark.parametrize(("args", "message"), BAD_FLAGS, ids=[m for _, m in BAD_FLAGS])
def test_bad_flags_exit_2_with_a_message(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*args, "--state-dir", str(tmp_path)])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_the_process_exits_2_on_a_bad_flag() -> None:
    result = subprocess.run(
        node_command("--hub", "localhost:8000", "--name", "n1", "--token", "t"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "hub must be an http:// or https:// URL" in result.stderr


async def test_a_refused_token_exits_1_instead_of_retrying(fake_hub: FakeHub, spawn_node):
    node = spawn_node(fake_hub, token="wrong-token")
    assert await node.wait() == 1
    log = node.log()
    assert "refused this node's credentials (HTTP 401: invalid node token)" in log
    assert len(fake_hub.handshakes) == 1


async def test_the_token_can_come_from_the_environment(fake_hub: FakeHub, spawn_node):
    spawn_node(fake_hub, token=None, env={"HIVEMIND_NODE_TOKEN": fake_hub.token})
    await fake_hub.wait_connected()
    assert fake_hub.handshakes[-1]["Authorization"] == f"Bearer {fake_hub.token}"


# Registration against a tiny stdlib HTTP server standing in for the hub's REST API.


class Registrar:
    """Answers ``POST /api/v1/nodes/register/``; any GET (the node's WebSocket attempt) is
    recorded and answered 503, so the node keeps retrying."""

    def __init__(self, *, join_token: str, issued: str) -> None:
        self.join_token, self.issued = join_token, issued
        self.registrations: list[dict[str, Any]] = []
        self.connect_tokens: list[str | None] = []
        registrar = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/api/v1/nodes/register/":
                    return self._reply(404, {"detail": "not found"})
                if body.get("join_token") != registrar.join_token:
                    return self._reply(403, {"detail": "invalid join token"})
                registrar.registrations.append(body)
                self._reply(201, {"name": body["name"], "token": registrar.issued})

            def do_GET(self) -> None:
                registrar.connect_tokens.append(self.headers.get("Authorization"))
                self._reply(503, {"detail": "not a websocket endpoint"})

            def _reply(self, status: int, data: dict[str, Any]) -> None:
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def registrar() -> Iterator[Registrar]:
    registrar = Registrar(join_token="join-abc", issued="issued-token-42")
    yield registrar
    registrar.server.shutdown()
    registrar.server.server_close()


@pytest.mark.slow
async def test_a_join_token_registers_once_and_the_stored_token_is_reused(
    registrar: Registrar, spawn_node, state_dir: Path
):
    args = ("--join-token", "join-abc", "--labels", "zone=eu")
    first = spawn_node(registrar.url, *args, token=None, capacity=3)
    await eventually(lambda: registrar.connect_tokens, "the node to connect after registering")
    assert registrar.registrations == [
        {"join_token": "join-abc", "name": "n1", "labels": {"zone": "eu"}, "capacity": 3}
    ]
    credentials = state_dir / "n1.json"
    assert json.loads(credentials.read_text())["token"] == "issued-token-42"
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    assert registrar.connect_tokens[0] == "Bearer issued-token-42"
    first.terminate()
    assert await first.wait() == 0

    tries = len(registrar.connect_tokens)
    second = spawn_node(registrar.url, *args, token=None, capacity=3)
    await eventually(lambda: len(registrar.connect_tokens) > tries, "the restarted node to connect")
    assert len(registrar.registrations) == 1  # not registered again
    assert registrar.connect_tokens[-1] == "Bearer issued-token-42"
    second.terminate()
    assert await second.wait() == 0


async def test_a_refused_registration_exits_1_with_the_hubs_reason(
    registrar: Registrar, spawn_node, state_dir: Path
):
    node = spawn_node(registrar.url, "--join-token", "wrong", token=None)
    assert await node.wait() == 1
    assert "refused the registration (HTTP 403): invalid join token" in node.log()
    assert not (state_dir / "n1.json").exists()


def test_two_nodes_cannot_share_a_name_and_state_dir(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from executor_core.node.state import NodeState

    state = NodeState(tmp_path, "n1")
    state.ensure_directory()
    with state.locked():
        code = main([*HUB, "--name", "n1", "--token", "t", "--state-dir", str(tmp_path)])
    assert code == 1
    assert "another hivemind-node named 'n1' is already running" in caplog.text
