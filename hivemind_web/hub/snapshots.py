"""The JSON a client sees of a task or node: the API's shape, built from plain values.

Board events are built for every transition, so they are made here from the model's
attributes (no DRF serializer on the hot path, DESIGN §10). The API's serializers list the
same fields (``TASK_FIELDS``, ``NODE_FIELDS``) and render values the same way.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hivemind_web.hub.models import Node, Task

TASK_FIELDS = (
    "session_id",
    "agent_id",
    "input",
    "status",
    "strategy",
    "route",
    "route_reason",
    "node",
    "team",
    "node_selector",
    "affinity",
    "progress",
    "message",
    "output",
    "error",
    "fallback_reason",
    "attempts",
    "pinned_node",
    "prefer_labels",
    "capabilities",
    "resources",
    "model",
    "priority",
    "max_wait",
    "timeout",
    "waiting_reason",
    "wait_until",
    "created_at",
    "started_at",
    "finished_at",
    "updated_at",
)
# What a board event carries: never input, output or logs (they can be large), nor the
# constraints the board does not show.
_NOT_IN_EVENTS = ("input", "output", "prefer_labels", "capabilities", "resources", "max_wait")
TASK_EVENT_FIELDS = tuple(f for f in TASK_FIELDS if f not in _NOT_IN_EVENTS)
NODE_FIELDS = (
    "name",
    "status",
    "labels",
    "capacity",
    "running",
    "last_heartbeat",
    "cpu",
    "mem",
    "agents",
    "capabilities",
    "models",
    "free_memory_mb",
    "free_disk_mb",
    "version",
    "cordoned",
    "draining",
    "updated_at",
    # Node control: the generation of the hub's node.config, the node's own last node.state,
    # and its refusals (a refusing node is backed off until backoff_until).
    "config_generation",
    "reported",
    "refusals",
    "last_refusal",
    "refused_at",
    "backoff_until",
)
_NODE_DATES = ("last_heartbeat", "updated_at", "refused_at", "backoff_until")
_TASK_DATES = ("created_at", "started_at", "finished_at", "updated_at", "wait_until")


def iso(value: datetime | None) -> str | None:
    """A datetime as DRF renders it (ISO 8601, ``Z`` for UTC)."""
    if value is None:
        return None
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def task_snapshot(task: Task, fields: tuple[str, ...] = TASK_FIELDS) -> dict[str, Any]:
    """The task as the API shows it. ``team``/``node`` are names; reads no other rows when
    the caller selected them (``select_related("team", "node")``)."""
    data: dict[str, Any] = {}
    for name in fields:
        if name == "session_id":
            data[name] = str(task.session_id)
        elif name == "team":
            data[name] = task.team.name if task.team_id else None
        elif name == "node":
            data[name] = task.node.name if task.node_id else None
        elif name in _TASK_DATES:
            data[name] = iso(getattr(task, name))
        else:
            data[name] = getattr(task, name)
    return data


def task_event_data(task: Task) -> dict[str, Any]:
    """The lean form a board event carries."""
    return task_snapshot(task, TASK_EVENT_FIELDS)


def node_snapshot(node: Node) -> dict[str, Any]:
    data = {name: getattr(node, name) for name in NODE_FIELDS}
    for name in _NODE_DATES:
        data[name] = iso(data[name])
    return data
