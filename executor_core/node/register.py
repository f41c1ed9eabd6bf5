"""Registering a node with the hub: a join token is exchanged for the node's own token."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from executor_core.node import protocol
from executor_core.node.connection import backoff_delay, hub_endpoint

logger = logging.getLogger("hivemind.node")

TOO_MANY_REQUESTS = 429  # the hub limits registrations per address: wait, then try again
ERR_REFUSED = "the hub refused the registration (HTTP {status}): {message}"
ERR_UNREACHABLE = "cannot register with the hub at {url}: {reason}"
ERR_BAD_ANSWER = "the hub answered the registration without a token (HTTP {status})"


class RegistrationError(Exception):
    """Registration failed; the message says why, in the hub's words when it gave any."""


def register_node(
    hubs: str | Sequence[str],
    *,
    join_token: str,
    name: str,
    labels: Mapping[str, str],
    capacity: int,
    retry_for: float = 30.0,
    max_backoff: float = 10.0,
    timeout: float = 10.0,
) -> str:
    """POST the registration and return the node's token.

    A 4xx answer is final, but 429 (too many registrations), which is retried after the
    wait the hub names. An unreachable hub or a 5xx answer is retried for ``retry_for``
    seconds, because nodes are often started together with the hub; with several hubs, each
    retry asks the next one.
    """
    urls = [
        hub_endpoint(h, protocol.REGISTER_PATH) for h in ([hubs] if isinstance(hubs, str) else hubs)
    ]
    body = json.dumps(
        {"join_token": join_token, "name": name, "labels": dict(labels), "capacity": capacity}
    ).encode("utf-8")
    deadline = time.monotonic() + retry_for
    failures = 0
    while True:
        url = urls[failures % len(urls)]
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return _token_from(response.status, response.read())
        except urllib.error.HTTPError as exc:
            problem = ERR_REFUSED.format(status=exc.code, message=_error_message(exc.read()))
            if exc.code < 500 and exc.code != TOO_MANY_REQUESTS:
                raise RegistrationError(problem) from None
            wait = _retry_after(exc.headers.get("Retry-After"))
        except (urllib.error.URLError, OSError) as exc:
            problem = ERR_UNREACHABLE.format(url=url, reason=getattr(exc, "reason", exc))
            wait = 0.0
        delay = max(wait, backoff_delay(failures // len(urls), max_backoff))
        failures += 1
        if time.monotonic() + delay > deadline:
            raise RegistrationError(problem)
        logger.warning("%s; retrying in %.1fs", problem, delay)
        time.sleep(delay)


def _retry_after(value: str | None) -> float:
    """Seconds a rate-limited hub asks to wait (Retry-After), 0 when it does not say."""
    try:
        return max(0.0, float(value or 0))
    except ValueError:
        return 0.0


def _token_from(status: int, raw: bytes) -> str:
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    token = data.get("token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        raise RegistrationError(ERR_BAD_ANSWER.format(status=status))
    return token


def _error_message(raw: bytes) -> str:
    """The hub's explanation: DRF's ``detail``, field errors, or the body's first 300 chars."""
    text = raw.decode("utf-8", "replace").strip()
    try:
        data: Any = json.loads(text)
    except ValueError:
        return text[:300] or "no explanation given"
    if isinstance(data, dict):
        for key in ("detail", "error", "message"):
            if isinstance(data.get(key), str):
                return data[key]
        return "; ".join(f"{key}: {_flatten(value)}" for key, value in data.items())
    return _flatten(data)


def _flatten(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(_flatten(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_flatten(v)}" for k, v in value.items())
    return str(value)
