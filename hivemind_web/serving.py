"""How daphne serves the hub: the options ``hive``, the tests and the README's production
command share, and whether a connection came over TLS.

Daphne drops a WebSocket message past its own limit without a word; set above the protocol's
frame limit, it lets the hub answer an oversized node frame with an error frame instead.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from executor_core.node.protocol import TRANSPORT_MAX_BYTES

DAPHNE_LIMITS = (
    "--websocket-max-message-size",
    str(TRANSPORT_MAX_BYTES),
    "--websocket-max-frame-size",
    str(TRANSPORT_MAX_BYTES),
)


def scope_is_secure(scope: dict[str, Any]) -> bool:
    """An ASGI connection (HTTP or WebSocket) over TLS, as ``request.is_secure()`` decides:
    TLS to daphne itself, or the trusted proxy's header (SECURE_PROXY_SSL_HEADER) says so."""
    if scope.get("scheme") in ("https", "wss"):
        return True
    header = settings.SECURE_PROXY_SSL_HEADER
    if not header:
        return False
    wanted = header[0].removeprefix("HTTP_").lower().replace("_", "-").encode()
    for key, value in scope.get("headers", ()):
        if key == wanted:
            return value.decode("latin-1").split(",", 1)[0].strip() == header[1]
    return False


def serve_raw_bodies() -> None:
    """Daphne hands the application each request's raw body. Twisted, below it, still parses
    every POST's Content-Type (through the email package) and form bodies into
    ``request.args``, which daphne never reads: 9% of the hub loop under single POSTs.
    Twisted's switch for that, ``parsePOSTFormSubmission``, is not exposed by daphne, so it
    is set here as the default of daphne's request class. Idempotent."""
    from daphne import http_protocol

    original = http_protocol.WebRequest.__init__
    if getattr(original, "raw_bodies", False):
        return

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("parsePOSTFormSubmission", False)
        original(self, *args, **kwargs)

    __init__.raw_bodies = True  # type: ignore[attr-defined]
    http_protocol.WebRequest.__init__ = __init__  # type: ignore[method-assign]


def skip_twisted_access_log() -> None:
    """Twisted's HTTP factory formats a combined-log line for every request and writes it to
    Twisted's own log, which daphne sends nowhere (or, at ``-v 2``, to Python logging beside
    its own lines). Daphne's access log already records each request (``--access-log``, or
    stdout at the default verbosity), so the second line is only cost: 1.6% of the hub loop
    under single POSTs. Idempotent."""
    from daphne import http_protocol

    http_protocol.HTTPFactory.log = _no_line  # type: ignore[method-assign]


def _no_line(self: Any, request: Any) -> None:
    """In place of Twisted's access-log line (daphne writes its own)."""
