"""The audit trail: every transition appends a TaskEvent and is broadcast to the board."""

from __future__ import annotations

from typing import Any

from hivemind_web.hub import broadcast
from hivemind_web.hub.models import Node, NodeEvent, Task, TaskEvent
from hivemind_web.hub.services import statements
from hivemind_web.hub.snapshots import node_snapshot, task_event_data

SYSTEM = "system"


def actor_name(actor: Any) -> str:
    """A user, a node name or None (the hub itself) as the string stored on events."""
    if actor is None:
        return SYSTEM
    if isinstance(actor, str):
        return actor
    return getattr(actor, "get_username", lambda: str(actor))()


def task_event(task: Task, kind: str, *, actor: Any = None, **data: Any) -> TaskEvent:
    """Append an event and broadcast the task's new state (after commit)."""
    event = TaskEvent.objects.create(task=task, kind=kind, actor=actor_name(actor), data=data)
    publish_task(task)
    return event


def task_events(items: list[tuple[Task, str, Any, dict[str, Any]]]) -> None:
    """Append several events (task, kind, actor, data) in one insert; broadcast each task."""
    if not items:
        return
    statements.insert_values(
        TaskEvent,
        [
            {"task_id": t.pk, "kind": kind, "actor": actor_name(a), "data": d}
            for t, kind, a, d in items
        ],
    )
    tasks = {id(item[0]): item[0] for item in items}.values()
    broadcast.publish_many("task", [(str(t.session_id), task_event_data(t)) for t in tasks])


def publish_task(task: Task) -> None:
    broadcast.publish("task", task_event_data(task), key=str(task.session_id))


def publish_node(node: Node) -> None:
    broadcast.publish("node", node_snapshot(node), key=node.name)


def node_event(node: Node, kind: str, *, actor: Any = None, **data: Any) -> NodeEvent:
    """Append to the node's audit trail (its new state is broadcast by the caller's save)."""
    return NodeEvent.objects.create(node=node, kind=kind, actor=actor_name(actor), data=data)
