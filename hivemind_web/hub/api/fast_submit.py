"""The lean path for token-authenticated submissions (``POST /api/v1/tasks/`` and
``/api/v1/tasks/batch/``), served on the event loop.

Through Django's stack a request pays a thread hand-off per middleware and one for the view,
all on one shared thread: ~200 small requests a second per process (DESIGN §9). Submission is
the hot path of an agent system (an orchestrator fans out hundreds of SubAgents), so a request
carrying an API token skips that stack: the token is checked against a short-lived cache, the
body is checked by the same serializers and services as the DRF view, and the tasks are stored
by the runtime's group-committing writer, many submissions to one transaction. Requests with
a session cookie (the browser) keep the full stack, CSRF included. The JSON in and out, the
errors and the status codes are the DRF view's.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from django.conf import settings
from django.http.request import split_domain_port, validate_host

from hivemind_web.bad_requests import too_large_message
from hivemind_web.hub.api import parsers
from hivemind_web.hub.api.permissions import SUBMIT
from hivemind_web.hub.api.serializers import TaskBatchSerializer, TaskSubmitSerializer
from hivemind_web.hub.execution.runtime import Runtime, ensure_started
from hivemind_web.hub.services import submission
from hivemind_web.hub.services.api_tokens import api_token_user
from hivemind_web.hub.services.errors import AtCapacity, ServiceValidationError
from hivemind_web.hub.snapshots import task_snapshot
from hivemind_web.serving import scope_is_secure

log = logging.getLogger(__name__)
PATHS = {"/api/v1/tasks/": False, "/api/v1/tasks/batch/": True}
# A revoked token or permission stops working within this many seconds.
TOKEN_TTL = 10.0
ERR_BAD_TOKEN = "Invalid token."
ERR_FORBIDDEN = "You do not have permission to perform this action."
ERR_HOST = "Invalid HTTP_HOST header."
ERR_INTERNAL = "the hub could not process the submission"
HEADERS = [
    (b"content-type", b"application/json"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"vary", b"Accept, Authorization"),
]


def wants(scope: dict[str, Any]) -> bool:
    """True for a token-authenticated submission this path serves. Plain HTTP to a hub that
    wants HTTPS goes the regular way, to be redirected by Django's SecurityMiddleware."""
    if scope.get("type") != "http" or scope.get("method") != "POST":
        return False
    if scope.get("path") not in PATHS:
        return False
    if settings.SECURE_SSL_REDIRECT and not scope_is_secure(scope):
        return False
    return _token(scope) is not None


def _hsts() -> bytes:
    """The Strict-Transport-Security value SecurityMiddleware would send, or b""."""
    if not settings.SECURE_HSTS_SECONDS:
        return b""
    value = f"max-age={settings.SECURE_HSTS_SECONDS}"
    if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
        value += "; includeSubDomains"
    if settings.SECURE_HSTS_PRELOAD:
        value += "; preload"
    return value.encode()


def _with_hsts(send: Any, value: bytes) -> Any:
    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {
                **message,
                "headers": [*message["headers"], (b"strict-transport-security", value)],
            }
        await send(message)

    return sending


def _header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return ""


def _token(scope: dict[str, Any]) -> str | None:
    scheme, _, key = _header(scope, b"authorization").partition(" ")
    return key.strip() if scheme.lower() == "token" and key.strip() else None


class _Actor:
    """Who submitted: what the services use of a user (its key and name)."""

    __slots__ = ("can_submit", "pk", "username")

    def __init__(self, pk: int, username: str, can_submit: bool) -> None:
        self.pk, self.username, self.can_submit = pk, username, can_submit

    def get_username(self) -> str:
        return self.username


def _lookup(key: str) -> _Actor | None:
    user = api_token_user(key)
    if user is None:
        return None
    return _Actor(user.pk, user.get_username(), user.has_perm(SUBMIT))


class TokenCache:
    def __init__(self, ttl: float = TOKEN_TTL) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, _Actor | None]] = {}

    async def actor(self, runtime: Runtime, key: str) -> _Actor | None:
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is not None and entry[0] > now:
            return entry[1]
        actor = await runtime.write(_lookup, key)
        if len(self._entries) > 10_000:  # bounded: a flood of bad tokens cannot grow it
            self._entries.clear()
        self._entries[key] = (now + self.ttl, actor)
        return actor


TOKENS = TokenCache()


async def _body(receive: Any) -> bytes | None:
    """The request body, or None past DATA_UPLOAD_MAX_MEMORY_SIZE."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if limit is not None and size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def _respond(send: Any, status: int, body: Any) -> None:
    data = json.dumps(body, separators=(",", ":")).encode()
    headers = [*HEADERS, (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


# One instance of each serializer, reused: building a DRF serializer deep-copies its fields,
# which cost more than validating a task. Validation keeps no state on the instance, and
# this runs on the event loop only.
_ITEM = TaskSubmitSerializer()
_BATCH = TaskBatchSerializer()


def _items(data: Any, batch: bool) -> list[dict[str, Any]]:
    """The submitted items, type-checked by the DRF view's own input serializers."""
    from rest_framework.exceptions import ValidationError

    if not batch:
        return [dict(_ITEM.run_validation(data))]
    items, errors = [], {}
    for i, raw in enumerate(_BATCH.run_validation(data)["tasks"]):
        try:
            items.append(dict(_ITEM.run_validation(raw)))
        except ValidationError as exc:
            errors[str(i)] = exc.detail
    if errors:
        raise ValidationError({"tasks": errors})
    return items


async def _known_agents(runtime: Runtime) -> set[str]:
    """The agents that exist, from the scheduler's picture of the fleet (no query)."""
    await runtime.scheduler.ready()
    return set(runtime.registry.names()) | runtime.scheduler.agents


async def serve(scope: dict[str, Any], receive: Any, send: Any) -> None:
    hsts = _hsts()
    if hsts and scope_is_secure(scope):
        send = _with_hsts(send, hsts)
    try:
        await _serve(scope, receive, send)
    except Exception:  # a bug or an outage: a JSON 500, and the details in the log
        log.exception("submission failed")
        await _respond(send, 500, {"detail": ERR_INTERNAL})


async def _serve(scope: dict[str, Any], receive: Any, send: Any) -> None:
    from rest_framework.exceptions import ValidationError

    host, _port = split_domain_port(_header(scope, b"host"))
    if not host or not validate_host(host, settings.ALLOWED_HOSTS):
        await _respond(send, 400, {"detail": ERR_HOST})
        return
    runtime = await ensure_started()
    actor = await TOKENS.actor(runtime, _token(scope) or "")
    if actor is None:
        await _respond(send, 401, {"detail": ERR_BAD_TOKEN})
        return
    if not actor.can_submit:
        await _respond(send, 403, {"detail": ERR_FORBIDDEN})
        return
    raw = await _body(receive)
    if raw is None:
        await _respond(send, 413, {"detail": too_large_message()})
        return
    try:
        data = parsers.decode(raw or b"null")
    except ValueError as exc:
        await _respond(send, 400, {"detail": str(exc)})
        return
    batch = PATHS[scope["path"]]
    try:
        items = _items(data, batch)
        requests = submission.validate_items(
            items, single=not batch, known=await _known_agents(runtime)
        )
        tasks = await runtime.write(submission.tasks_store, actor=actor, requests=requests)
    except ValidationError as exc:
        await _respond(send, 400, exc.detail)
        return
    except ServiceValidationError as exc:
        body = {k: v if isinstance(v, list | dict) else [v] for k, v in exc.errors.items()}
        await _respond(send, 400, body)
        return
    except AtCapacity as exc:
        await _respond(send, 503, {"detail": str(exc)})
        return
    if batch:
        await _respond(send, 201, [task_snapshot(t) for t in tasks])
    else:
        detail = task_snapshot(tasks[0])
        # A task just stored has no attempt yet: no usage, no placement record.
        detail.update(
            log=list(tasks[0].log),
            excluded_nodes=list(tasks[0].excluded_nodes),
            usage={},
            placement={},
        )
        await _respond(send, 201, detail)
