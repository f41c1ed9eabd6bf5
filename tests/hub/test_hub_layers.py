"""The embedded channel layer: Channels' in-memory layer, sharing message bodies."""

from __future__ import annotations

import pytest
from channels.exceptions import ChannelFull

from hivemind_web.hub.layers import LocalChannelLayer


@pytest.mark.asyncio
async def test_a_group_send_reaches_every_member_sharing_the_body() -> None:
    layer = LocalChannelLayer()
    a, b = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("board", a)
    await layer.group_add("board", b)
    events = [{"kind": "task", "data": {"session_id": "s1"}}]
    await layer.group_send("board", {"type": "board.events", "events": events})
    got_a, got_b = await layer.receive(a), await layer.receive(b)
    assert got_a == got_b == {"type": "board.events", "events": events}
    assert got_a is not got_b  # each delivery has its own envelope...
    assert got_a["events"] is got_b["events"] is events  # ...and shares the body


@pytest.mark.asyncio
async def test_a_full_member_misses_the_message_and_the_others_still_get_it() -> None:
    layer = LocalChannelLayer(capacity=1)
    full, free = await layer.new_channel(), await layer.new_channel()
    await layer.send(full, {"type": "first"})
    await layer.group_add("g", full)
    await layer.group_add("g", free)
    await layer.group_send("g", {"type": "second"})
    assert (await layer.receive(free))["type"] == "second"
    assert (await layer.receive(full))["type"] == "first"
    await layer.send(full, {"type": "third"})
    with pytest.raises(ChannelFull):  # a direct send to a full channel says so
        await layer.send(full, {"type": "fourth"})
