"""The embedded channel layer: Channels' in-memory layer, without a deep copy per delivery.

The in-memory layer deep-copies every message for every receiving channel, to behave like a
layer that serialises. A board message carries hundreds of task events and goes to every
board client, so with 50 boards those copies took ~30% of the hub loop. Messages here are
values nobody changes after sending (the senders build them fresh; the consumers read them
and keep the event dicts as given), so each delivery gets a shallow copy of the envelope and
shares the rest. A group send puts the message on each member's queue directly instead of
starting a task per member (a put never waits: the layer's queues raise when full).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer


class LocalChannelLayer(InMemoryChannelLayer):
    async def send(self, channel: str, message: dict[str, Any]) -> None:
        self._put(channel, message)

    def _put(self, channel: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        assert "__asgi_channel__" not in message
        queue = self.channels.setdefault(channel, asyncio.Queue(maxsize=self.get_capacity(channel)))
        try:
            queue.put_nowait((time.time() + self.expiry, dict(message)))
        except asyncio.QueueFull:
            raise ChannelFull(channel) from None

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        for channel in list(self.groups.get(group, ())):
            # As Channels' layers do: a member whose queue is full misses this message.
            with contextlib.suppress(ChannelFull):
                self._put(channel, message)
