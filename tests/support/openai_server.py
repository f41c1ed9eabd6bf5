"""A scripted OpenAI-compatible chat completions server, real HTTP on loopback, for tests.

``OpenAIServer().start()`` serves ``POST /v1/chat/completions`` from a thread. Each request
takes the next scripted reply (``reply_stream`` / ``reply_error``), or the default stream
when the script is empty, and is recorded with its headers and JSON body. Streams are sent as
server-sent events, piece by piece with a delay, the way providers send them; a client that
goes away mid-stream is noticed (``disconnected``).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    pieces: list[str] = field(default_factory=list)
    delay: float = 0.0
    error: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    usage: dict[str, int] | None = None


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class OpenAIServer:
    def __init__(self) -> None:
        self.script: deque[Reply] = deque()
        self.requests: list[Seen] = []
        self.disconnected = threading.Event()
        self.sent_pieces = 0
        self.default = Reply(pieces=["Hello", " from", " the", " model.\n", "Second line."])
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def reply_stream(
        self, pieces: list[str], *, delay: float = 0.0, usage: dict[str, int] | None = None
    ) -> None:
        self.script.append(Reply(pieces=pieces, delay=delay, usage=usage))

    def reply_error(self, status: int, message: str, **headers: str) -> None:
        self.script.append(Reply(status=status, error=message, headers=headers))

    def start(self) -> OpenAIServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                headers = {k.lower(): v for k, v in self.headers.items()}
                server.requests.append(Seen(self.path, headers, body))
                reply = server.script.popleft() if server.script else server.default
                if self.path != "/v1/chat/completions":
                    reply = Reply(status=404, error=f"no route {self.path}")
                if reply.status != 200:
                    self._error(reply)
                else:
                    self._stream(reply, body.get("model", ""))

            def _error(self, reply: Reply) -> None:
                data = json.dumps({"error": {"message": reply.error, "type": "test"}}).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name.replace("_", "-"), value)
                self.end_headers()
                self.wfile.write(data)

            def _event(self, data: dict[str, Any] | str) -> None:
                text = data if isinstance(data, str) else json.dumps(data)
                self.wfile.write(f"data: {text}\n\n".encode())
                self.wfile.flush()

            def _stream(self, reply: Reply, model: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                base = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 0}
                base["model"] = model
                try:
                    for piece in reply.pieces:
                        delta = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                        self._event({**base, "choices": [delta]})
                        server.sent_pieces += 1
                        if reply.delay:
                            time.sleep(reply.delay)
                    end = {"index": 0, "delta": {}, "finish_reason": "stop"}
                    self._event({**base, "choices": [end]})
                    usage = reply.usage or {
                        "prompt_tokens": 7,
                        "completion_tokens": len(reply.pieces),
                    }
                    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                    self._event({**base, "choices": [], "usage": usage})
                    self._event("[DONE]")
                except (BrokenPipeError, ConnectionResetError):
                    server.disconnected.set()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
