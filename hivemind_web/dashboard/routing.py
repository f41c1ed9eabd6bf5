"""WebSocket routes of the dashboard (the ASGI entry point adds origin and auth checks)."""

from __future__ import annotations

from django.urls import path

from hivemind_web.dashboard.consumers import BoardConsumer

websocket_urlpatterns = [path("ws/board/", BoardConsumer.as_asgi())]
