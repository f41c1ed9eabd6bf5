"""Consumers that skip Channels' per-message database hop.

Channels' ``AsyncConsumer.dispatch`` awaits ``aclose_old_connections()`` before every
message: a trip to the one shared database thread, to close connections the handler might
have left behind. Our consumers never touch the database on the event loop (their reads go
through ``database_sync_to_async``, which cleans up after itself, or the runtime's writer),
so under 50 board clients that trip was a quarter of the loop's busy time (DESIGN §10).
"""

from __future__ import annotations

from typing import Any

from channels.consumer import get_handler_name


class DirectDispatch:
    async def dispatch(self, message: dict[str, Any]) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)
