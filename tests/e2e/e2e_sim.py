"""A fleet of simulated nodes for the browser tests that need many: real WebSocket
connections to the hub speaking the node protocol, all on one event loop in a thread (fifty
real node processes would not fit on the test machine). Each node accepts what it is
assigned, reports progress, finishes it (echoing the input) after ``work`` seconds, answers
node.config with node.state and heartbeats every second."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from typing import Any

from support.live import LiveHub
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

from executor_core.node import protocol

CREATE_NODES = (
    "import json\n"
    "from hivemind_web.hub.services.nodes import node_create\n"
    "tokens = {{}}\n"
    "for name, labels in {nodes!r}.items():\n"
    "    tokens[name] = node_create(name=name, labels=labels, capacity={capacity})[1]\n"
    "print(json.dumps(tokens))\n"
)


class SimFleet:
    def __init__(
        self,
        hub: LiveHub,
        nodes: dict[str, dict[str, str]],
        *,
        capacity: int = 4,
        work: float = 0.3,
    ) -> None:
        self.hub, self.nodes, self.capacity, self.work = hub, nodes, capacity, work
        script = CREATE_NODES.format(nodes=nodes, capacity=capacity)
        self.tokens: dict[str, str] = json.loads(
            hub.manage("shell", "-c", script).strip().splitlines()[-1]
        )
        self.finished = 0
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> SimFleet:
        self._thread.start()
        for name in self.nodes:
            asyncio.run_coroutine_threadsafe(self._node(name), self._loop)
        return self

    def stop(self) -> None:
        """Hang up every node: cancel and await its tasks before the loop stops, so none is
        left half-run for the garbage collector to close on a stopped loop."""
        asyncio.run_coroutine_threadsafe(self._hang_up(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    async def _hang_up(self) -> None:
        self._stop.set()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _node(self, name: str) -> None:
        url = self.hub.url.replace("http://", "ws://") + "/" + protocol.WS_PATH
        headers = {"Authorization": f"Bearer {self.tokens[name]}"}
        while not self._stop.is_set():
            try:
                async with connect(
                    url,
                    origin=Origin(self.hub.url),
                    additional_headers=headers,
                    open_timeout=60,
                    max_size=protocol.MAX_FRAME_BYTES,
                ) as ws:
                    await ws.send(
                        protocol.encode(
                            "hello",
                            name=name,
                            version="sim",
                            labels=self.nodes[name],
                            capacity=self.capacity,
                            agents=["echo"],
                            running=[],
                        )
                    )
                    beats = asyncio.create_task(self._beat(ws))
                    try:
                        await self._serve(ws, name)
                    finally:
                        beats.cancel()
            except Exception:
                await asyncio.sleep(0.5)

    async def _beat(self, ws: ClientConnection) -> None:
        while True:
            await ws.send(protocol.encode("heartbeat", running=0, cpu=3.0, mem=4.0, peak=0))
            await asyncio.sleep(1.0)

    async def _serve(self, ws: ClientConnection, name: str) -> None:
        capacity, labels, running = self.capacity, self.nodes[name], 0
        async for raw in ws:
            msg = json.loads(raw)
            kind = msg.get("type")
            if kind == "node.config":
                capacity, labels = msg["capacity"], msg["labels"]
                state = {k: msg[k] for k in ("generation", "cordoned", "draining")}
                await ws.send(
                    protocol.encode(
                        "node.state",
                        **state,
                        stopping=False,
                        capacity=capacity,
                        labels=labels,
                        running=running,
                    )
                )
            elif kind == "task.assign":
                running += 1
                asyncio.get_running_loop().create_task(self._run(ws, msg))
            elif kind == "ack":
                running = max(0, running - 1)

    async def _run(self, ws: ClientConnection, msg: dict[str, Any]) -> None:
        sid, attempt = msg["session_id"], msg["attempt"]
        with contextlib.suppress(Exception):
            await ws.send(protocol.encode("task.accepted", session_id=sid, attempt=attempt))
            await asyncio.sleep(self.work)
            await ws.send(protocol.encode("task.progress", session_id=sid, pct=100.0, message=""))
            await ws.send(
                protocol.encode(
                    "task.finished",
                    session_id=sid,
                    attempt=attempt,
                    status="succeeded",
                    output=msg["input"],
                    error="",
                )
            )
            self.finished += 1
