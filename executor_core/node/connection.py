"""Where and how a node reaches its hubs: URLs derived from ``--hub``, and reconnect backoff."""

from __future__ import annotations

import random
from urllib.parse import urlsplit, urlunsplit

from executor_core.node import protocol

BACKOFF_BASE = 0.5


class HubURLError(ValueError):
    """The ``--hub`` value is not an http(s) base URL."""


class HubAuthError(Exception):
    """The hub refused the node's credentials: retrying with the same token cannot help."""


def check_hub_url(hub: str) -> str:
    """Validate an ``http(s)://HOST[:PORT][/prefix]`` base URL and return it without a
    trailing slash."""
    parts = urlsplit(hub.strip())
    if parts.scheme not in ("http", "https"):
        raise HubURLError(f"hub must be an http:// or https:// URL, got {hub!r}")
    if not parts.hostname:
        raise HubURLError(f"hub URL {hub!r} has no host")
    if parts.username is not None or parts.query or parts.fragment:
        raise HubURLError(f"hub URL {hub!r} must not carry credentials, a query or a fragment")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise HubURLError(f"hub URL {hub!r} has an invalid port") from None
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def check_hub_urls(value: str) -> tuple[str, ...]:
    """``URL[,URL...]``: the hub processes a node may use, in order of preference."""
    hubs = tuple(dict.fromkeys(check_hub_url(part) for part in value.split(",") if part.strip()))
    if not hubs:
        raise HubURLError("hub must name at least one http:// or https:// URL")
    return hubs


def hub_origin(hub: str) -> str:
    """The Origin a browser on the hub's own pages would send; the hub checks it."""
    parts = urlsplit(hub)
    return f"{parts.scheme}://{parts.netloc}"


def hub_endpoint(hub: str, path: str) -> str:
    """``path`` (relative, e.g. ``ws/nodes/``) under the hub's base URL, keeping its prefix."""
    parts = urlsplit(hub)
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + "/" + path, "", ""))


def hub_ws_url(hub: str) -> str:
    """``ws(s)://HOST:PORT/ws/nodes/`` for an ``http(s)://HOST:PORT`` hub."""
    url = hub_endpoint(hub, protocol.WS_PATH)
    return "wss" + url[len("https") :] if url.startswith("https:") else "ws" + url[len("http") :]


def backoff_delay(failures: int, cap: float, base: float = BACKOFF_BASE) -> float:
    """Seconds to wait after ``failures`` consecutive failed connections (0 = first retry).

    Exponential with "equal jitter": half the step is fixed, half random, so a fleet of nodes
    that lost the hub together does not reconnect in lockstep.
    """
    step = min(cap, base * 2 ** min(failures, 32))
    return step / 2 + random.uniform(0, step / 2)
