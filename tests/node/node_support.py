"""A scripted fake hub and real ``hivemind-node`` processes for the node agent's tests.

The fake hub speaks the node protocol from ``executor_core.node.protocol`` over a real
WebSocket on loopback, checks the bearer token like the real hub, and records every frame
the node sends. Nodes are subprocesses (``python -m executor_core.node.cli``) with short
heartbeats and backoffs, killed at teardown whatever happened.

A module of its own, not ``conftest``: tests import these names, and a ``conftest`` module
name is shared by every test folder, so importing from it breaks when folders run together.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from http import HTTPStatus
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from executor_core.node import protocol

TOKEN = "node-token-123"
WAIT = 15.0  # generous: the machine may be busy with other test processes
REPO = Path(__file__).resolve().parents[2]


class FakeHub:
    """One hub endpoint at ``/ws/nodes/``; ``stop()`` and ``start()`` again keep the port."""

    def __init__(self, *, token: str = TOKEN, auto_ack: bool = True) -> None:
        self.token = token
        self.auto_ack = auto_ack
        self.port = 0
        self.frames: list[protocol.Message] = []
        self.errors: list[str] = []  # frames the node got wrong: every test asserts none
        self.handshakes: list[Headers] = []
        self.connections = 0
        self._server: Server | None = None
        self._ws: ServerConnection | None = None
        self._changed = asyncio.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeHub:
        self._server = await serve(
            self._serve, "127.0.0.1", self.port, process_request=self._check_request
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            self._ws = None

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.handshakes.append(request.headers)
        if request.path != "/ws/nodes/":
            return connection.respond(HTTPStatus.NOT_FOUND, "no such endpoint\n")
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return connection.respond(HTTPStatus.UNAUTHORIZED, "invalid node token\n")
        return None

    async def _serve(self, ws: ServerConnection) -> None:
        self._ws = ws
        self.connections += 1
        try:
            async for text in ws:
                try:
                    message = protocol.parse_frame(text, direction="node")
                except protocol.ProtocolError as exc:
                    self.errors.append(str(exc))
                    continue
                if message.type == "hello":
                    await ws.send(
                        protocol.encode("welcome", node=message["name"], heartbeat_interval=5.0)
                    )
                elif message.type == "task.finished" and self.auto_ack:
                    await ws.send(
                        protocol.encode(
                            "ack", session_id=message["session_id"], attempt=message["attempt"]
                        )
                    )
                async with self._changed:
                    self.frames.append(message)
                    self._changed.notify_all()
        except ConnectionClosed:
            pass

    async def send(self, type_: str, **fields: Any) -> None:
        assert self._ws is not None, "no node is connected"
        await self._ws.send(protocol.encode(type_, **fields))

    async def assign(self, session_id: str, agent_id: str, input: str = "", attempt: int = 1):
        await self.send(
            "task.assign", session_id=session_id, agent_id=agent_id, input=input, attempt=attempt
        )

    def matching(self, type_: str, since: int = 0, **fields: Any) -> list[protocol.Message]:
        return [
            m
            for m in self.frames[since:]
            if m.type == type_ and all(m.get(k) == v for k, v in fields.items())
        ]

    async def wait_for(
        self, type_: str, *, since: int = 0, timeout: float = WAIT, **fields: Any
    ) -> protocol.Message:
        """The first frame of ``type_`` with these field values, received after ``since``."""

        def found() -> list[protocol.Message]:
            return self.matching(type_, since, **fields)

        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(found)
        except TimeoutError:
            seen = [(m.type, dict(m.fields)) for m in self.frames[since:] if m.type != "heartbeat"]
            raise AssertionError(
                f"no {type_} {fields} within {timeout:g}s; received: {seen}"
            ) from None
        return found()[0]

    async def wait_connected(self, count: int = 1) -> protocol.Message:
        """The hello of the ``count``-th connection."""
        await self.wait_for("hello")
        async with asyncio.timeout(WAIT), self._changed:
            await self._changed.wait_for(lambda: len(self.matching("hello")) >= count)
        return self.matching("hello")[count - 1]


class NodeProcess:
    """A ``hivemind-node`` subprocess writing its log to a file."""

    def __init__(
        self, args: list[str], state_dir: Path, name: str, log_path: Path, env: dict[str, str]
    ) -> None:
        self.args, self.state_dir, self.name, self.log_path = args, state_dir, name, log_path
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("HIVEMIND_")},
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stats(self) -> dict[str, int]:
        return json.loads((self.state_dir / f"{self.name}.stats.json").read_text())

    def outbox(self) -> list[dict[str, Any]]:
        path = self.state_dir / f"{self.name}.outbox.json"
        return json.loads(path.read_text()) if path.exists() else []

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float = WAIT) -> int:
        try:
            return await asyncio.to_thread(self.proc.wait, timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"node {self.name} still running after {timeout:g}s; log:\n{self.log()}"
            ) from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def node_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "executor_core.node.cli", *args]
