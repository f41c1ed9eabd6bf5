"""The JSON a client sees of a task or node: the API's shape, reused for board events."""

from __future__ import annotations

from typing import Any

from hivemind_web.hub.api.serializers import NodeSerializer, TaskSerializer
from hivemind_web.hub.models import Node, Task


def task_snapshot(task: Task) -> dict[str, Any]:
    data = dict(TaskSerializer(task).data)
    data["session_id"] = str(task.session_id)
    return data


def node_snapshot(node: Node) -> dict[str, Any]:
    return dict(NodeSerializer(node).data)
