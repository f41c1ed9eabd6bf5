"""WebSocket load for ``bench/e2e.py``, run as ONE separate asyncio process.

``board``: logged-in ``/ws/board/`` clients that keep each task's latest status from the
snapshot and frames (as static/js/live.js does: a sequence gap asks for a new snapshot) and
record when each task entry of a frame arrived, with the task's ``updated_at``.

``sim``: protocol-speaking node connections to ``/ws/nodes/``: ``hello``, then a ``heartbeat``
every second.

Both write ``OUT.ready`` once everything is connected and run until SIGTERM, then write their
results as JSON to ``OUT``; board clients first wait (a bounded time) until their view equals
the ``--expected`` statuses, the database's, so a slow board is measured rather than cut off.

Running apart from the bench keeps its threads and parsing from delaying frame receipt times
or starving the heartbeats.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

from executor_core.node import protocol

HANDSHAKES_AT_ONCE = 100  # a whole fleet dialling in the same millisecond is not the test
QUIET = 5.0  # seconds without a board message: the board has said all it will say
CATCH_UP_LIMIT = 120.0


def ws_url(hub: str, path: str) -> str:
    return "ws" + hub.removeprefix("http") + path


class BoardClient:
    def __init__(self, hub: str, session: str) -> None:
        self.hub, self.session = hub, session
        self.view: dict[str, str] = {}  # session id -> latest status seen
        self.arrivals: list[tuple[float, str]] = []  # (receipt time, the task's updated_at)
        self.seq = 0
        self.gaps = self.snapshots = 0
        self.snapshot_seen = asyncio.Event()
        self.last_message = time.monotonic()
        self.caught_up: float | None = None  # seconds after the stop until view == expected

    async def run(self, stop: asyncio.Event) -> None:
        async with connect(
            ws_url(self.hub, "/ws/board/?tasks=1"),
            origin=Origin(self.hub),
            additional_headers={"Cookie": f"sessionid={self.session}"},
            max_size=None,
            open_timeout=60,
        ) as ws:
            reader = asyncio.create_task(self._read(ws))
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait([reader, stopping], return_when=asyncio.FIRST_COMPLETED)
            if not stop.is_set():
                stopping.cancel()
                reader.result()  # the reader's own error, if it has one
                raise RuntimeError(f"the hub closed a board socket (code {ws.close_code})")
            reader.cancel()

    async def _read(self, ws: ClientConnection) -> None:
        async for raw in ws:
            received = time.time()
            self.last_message = time.monotonic()
            msg = json.loads(raw)
            if msg.get("type") == "snapshot":
                self._apply_snapshot(msg)
            elif msg.get("type") == "frame":
                if msg["seq"] != self.seq + 1:
                    self.gaps += 1
                    await ws.send(json.dumps({"type": "snapshot", "tasks": 1}))
                self.seq = msg["seq"]
                for task in msg["tasks"]:
                    self.view[task["session_id"]] = task["status"]
                    self.arrivals.append((received, task["updated_at"]))

    def _apply_snapshot(self, msg: dict[str, Any]) -> None:
        self.seq = msg["seq"]
        self.snapshots += 1
        for task in msg.get("tasks", {}).get("results", []) + msg.get("bound", []):
            self.view[task["session_id"]] = task["status"]
        self.snapshot_seen.set()

    def result(self) -> dict[str, Any]:
        return {
            "view": self.view,
            "arrivals": self.arrivals,
            "gaps": self.gaps,
            "snapshots": self.snapshots,
            "caught_up": self.caught_up,
        }


async def settle(clients: list[BoardClient], expected: dict[str, str] | None) -> None:
    """After the run, give the clients time to catch up with ``expected`` (the database).

    Each stops waiting once its view equals it; everyone stops after QUIET seconds without a
    message, or CATCH_UP_LIMIT in all, so a board that never converges still ends the run.
    """
    started = time.monotonic()
    while expected is not None and time.monotonic() - started < CATCH_UP_LIMIT:
        now = time.monotonic()
        for client in clients:
            if client.caught_up is None and client.view == expected:
                client.caught_up = now - started
        if all(c.caught_up is not None for c in clients):
            return
        if now - max(c.last_message for c in clients) > QUIET:
            return
        await asyncio.sleep(0.05)


class SimNode:
    def __init__(self, hub: str, name: str, token: str) -> None:
        self.hub, self.name, self.token = hub, name, token
        self.received: Counter[str] = Counter()
        self.connects = self.failures = 0
        self.hello_sent = asyncio.Event()

    async def run(self, stop: asyncio.Event, gate: asyncio.Semaphore) -> None:
        while not stop.is_set():
            try:
                async with gate:
                    ws = await connect(
                        ws_url(self.hub, "/" + protocol.WS_PATH),
                        origin=Origin(self.hub),
                        additional_headers={"Authorization": f"Bearer {self.token}"},
                        open_timeout=60,
                    )
                    await ws.send(self._hello())
                async with ws:
                    self.connects += 1
                    self.hello_sent.set()
                    reader = asyncio.create_task(self._read(ws))
                    await self._heartbeat(ws, stop)
                    reader.cancel()
            except Exception:  # a refused or dropped connection: count it, back off, retry
                self.failures += 1
                await asyncio.sleep(1 + random.random())

    def _hello(self) -> str:
        return protocol.encode(
            "hello",
            name=self.name,
            version="bench-sim",
            labels={"sim": "true"},
            capacity=16,
            agents=["echo"],
            running=[],
        )

    async def _heartbeat(self, ws: ClientConnection, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await ws.send(protocol.encode("heartbeat", running=0, cpu=1.0, mem=10.0, peak=0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)

    async def _read(self, ws: ClientConnection) -> None:
        async for raw in ws:
            msg = json.loads(raw)
            self.received[msg.get("type", "?")] += 1
            if msg.get("type") == "task.assign":  # not expected: this workload sends no tasks
                reject = {"session_id": msg["session_id"], "attempt": msg["attempt"]}
                await ws.send(protocol.encode("task.rejected", **reject, reason="simulated"))

    def result(self) -> dict[str, Any]:
        return {"connects": self.connects, "failures": self.failures, "received": self.received}


async def serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()  # SIGTERM: the run is over
    close = asyncio.Event()  # the clients may hang up
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    hubs = args.hubs.split(",")
    creds = json.loads(Path(args.credentials).read_text())
    if args.mode == "board":
        clients: list[Any] = [
            BoardClient(hubs[i % len(hubs)], s) for i, s in enumerate(creds["sessions"])
        ]
        runs = [asyncio.create_task(c.run(close)) for c in clients]
        events = [c.snapshot_seen for c in clients]
    else:
        gate = asyncio.Semaphore(HANDSHAKES_AT_ONCE)
        clients = [
            SimNode(hubs[i % len(hubs)], name, token)
            for i, (name, token) in enumerate(sorted(creds["nodes"].items()))
        ]
        runs = [asyncio.create_task(c.run(close, gate)) for c in clients]
        events = [c.hello_sent for c in clients]
    ready = asyncio.create_task(asyncio.wait([asyncio.create_task(e.wait()) for e in events]))
    await asyncio.wait([ready, *runs], return_when=asyncio.FIRST_COMPLETED)
    for run in runs:
        if run.done():  # a client failed before everyone was connected
            run.result()
            raise RuntimeError("a client stopped before the run began")
    Path(args.out + ".ready").write_text("ready")
    await stop.wait()
    if args.mode == "board":
        expected = Path(args.expected) if args.expected else None
        await settle(clients, json.loads(expected.read_text()) if expected else None)
    close.set()
    await asyncio.gather(*runs, return_exceptions=True)
    Path(args.out).write_text(json.dumps([c.result() for c in clients]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["board", "sim"])
    parser.add_argument("--hubs", required=True, help="hub base URLs, comma-separated")
    parser.add_argument("--credentials", required=True, help="the bench's setup JSON")
    parser.add_argument("--out", required=True)
    parser.add_argument("--expected", help="board: the statuses to catch up with, JSON")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
