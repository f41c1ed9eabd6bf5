"""ASGI entry point: HTTP through Django, WebSockets through Channels (daphne serves it)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hivemind_web.settings")

from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from hivemind_web.hub.api import fast_submit  # noqa: E402
from hivemind_web.hub.consumers.nodes import NodeConsumer  # noqa: E402
from hivemind_web.hub.execution import loop as hub_loop  # noqa: E402
from hivemind_web.hub.execution import runtime, shutdown  # noqa: E402
from hivemind_web.serving import serve_raw_bodies, skip_twisted_access_log  # noqa: E402

serve_raw_bodies()
skip_twisted_access_log()

websocket_routes = [path("ws/nodes/", NodeConsumer.as_asgi())]
try:  # the dashboard's live board, when installed
    from hivemind_web.dashboard.routing import websocket_urlpatterns as board_routes
except ImportError:  # pragma: no cover
    board_routes = []

router = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_routes + board_routes))
        ),
    }
)


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    # The first connection tells us the server's loop: the hub runtime lives on it.
    if hub_loop.bind(asyncio.get_running_loop()):
        shutdown.install(await runtime.ensure_started(), asyncio.get_running_loop())
    if fast_submit.wants(scope):
        await fast_submit.serve(scope, receive, send)
        return
    await router(scope, receive, send)
