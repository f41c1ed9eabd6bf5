"""Publishing hub changes to the channel-layer group ``board`` (the dashboard consumes it).

Messages are sent after the transaction commits, so a listener that re-reads the database
always sees the change it was told about.
"""

from __future__ import annotations

import logging
from typing import Any

from channels.layers import get_channel_layer
from django.db import transaction

from hivemind_web.hub.execution import loop as hub_loop

BOARD_GROUP = "board"
log = logging.getLogger(__name__)


def node_group(name: str) -> str:
    """The group a node's consumer joins: where assignments and cancels for it go."""
    return f"node.{name}"


def task_group(session_id: str) -> str:
    """Per-task group for the task page's log stream."""
    return f"task.{session_id}"


def publish(kind: str, data: dict[str, Any]) -> None:
    """Tell the board about a change of ``kind`` (task, node, fallback_mode) after commit."""
    send_after_commit(BOARD_GROUP, {"type": "board.event", "kind": kind, "data": data})


def send_after_commit(group: str, message: dict[str, Any]) -> None:
    transaction.on_commit(lambda: send_now(group, message))


def send_now(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    hub_loop.submit(_group_send(layer, group, message))


async def _group_send(layer: Any, group: str, message: dict[str, Any]) -> None:
    try:
        await layer.group_send(group, message)
    except Exception:  # a full channel or a Redis hiccup must never break a transition
        log.exception("could not publish to %s", group)
