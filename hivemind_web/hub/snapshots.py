"""The JSON a client sees of a task or node: the API's shape, built from plain values.

Board events are built for every transition, so they are made here from the model's
attributes (no DRF serializer on the hot path, DESIGN §10). The API's serializers list the
same fields (``TASK_FIELDS``, ``NODE_FIELDS``) and render values the same way.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
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
    read, dates, related = _shape(fields)
    values = list(read(task))
    for i in dates:
        values[i] = iso(values[i])
    for i, name in related:
        values[i] = getattr(task, name).name if values[i] is not None else None
    values[0] = str(values[0])
    return dict(zip(fields, values, strict=True))


@functools.lru_cache(maxsize=8)
def _shape(
    fields: tuple[str, ...],
) -> tuple[Callable[[Task], tuple], tuple[int, ...], tuple[tuple[int, str], ...]]:
    """How ``task_snapshot`` reads ``fields`` (session_id first): one C-level getter of
    every attribute (a board event is built for every transition), which of them are
    datetimes, and which are related rows, read by their key (``team_id``) and then by name."""
    if fields[0] != "session_id":
        raise ValueError("a task snapshot starts with its session_id")
    related = {"team": "team_id", "node": "node_id"}
    read = operator.attrgetter(*(related.get(name, name) for name in fields))
    dates = tuple(i for i, name in enumerate(fields) if name in _TASK_DATES)
    return read, dates, tuple((i, name) for i, name in enumerate(fields) if name in related)


def task_event_data(task: Task) -> dict[str, Any]:
    """The lean form a board event carries."""
    return task_snapshot(task, TASK_EVENT_FIELDS)


def node_snapshot(node: Node) -> dict[str, Any]:
    data = {name: getattr(node, name) for name in NODE_FIELDS}
    for name in _NODE_DATES:
        data[name] = iso(data[name])
    return data
