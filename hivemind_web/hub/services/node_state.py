"""A node's derived status and its bound-slot count: the part of node state that task
transitions change too (a slot given back can finish an operator's drain)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import connection
from django.utils import timezone

from hivemind_web.hub import intents
from hivemind_web.hub.models import Node
from hivemind_web.hub.services import events, statements

NODE_COLUMNS = tuple(f.name for f in Node._meta.concrete_fields)
_running = statements.column(Node, "running")
# Slots given back never take the count below zero (a release after a node was reset).
GIVE_BACK_SLOTS = (
    f"UPDATE {statements.table(Node)} SET {_running} = CASE WHEN {_running} > %s "
    f"THEN {_running} - %s ELSE 0 END, {statements.column(Node, 'updated_at')} = %s "
    f"WHERE {statements.column(Node, 'id')} = %s"
)


# Every hub's batches write node rows (slots taken and given back, heartbeats) in whatever
# order their calls meet the nodes; on PostgreSQL two batches meeting two nodes in opposite
# orders deadlock, and each deadlock costs a second (``deadlock_timeout``) and a retry. One
# transaction-scoped advisory lock, taken before a batch's first such write, puts those
# writes in one order across hubs. SQLite has one writer at a time: nothing to order.
NODE_ROWS_LOCK = 0x4E4F4445  # "NODE", the same constant in every hub


def lock_node_rows() -> None:
    """Hold the node rows' write order until this transaction ends (no-op on SQLite)."""
    if connection.vendor == "postgresql":
        statements.execute("SELECT pg_advisory_xact_lock(%s)", [NODE_ROWS_LOCK])


def read_nodes(where: str, params: list) -> list[Node]:
    """Whole node rows (as the board shows them) matching a ``statements`` condition."""
    return statements.select(Node, NODE_COLUMNS, where, params)


def derive_status(node: Node) -> str:
    """One status word from health and intent: not_ready beats draining beats cordoned."""
    if not node.healthy:
        return Node.Status.NOT_READY
    if node.draining:
        return Node.Status.DRAINING
    if node.cordoned:
        return Node.Status.CORDONED
    return Node.Status.READY


def node_save(node: Node, *fields: str) -> Node:
    node.status = derive_status(node)
    node.save(update_fields=[*fields, "status", "updated_at"])
    events.publish_node(node)
    # What the scheduler decides on changed: its picture of the fleet follows the database.
    intents.nodes_changed()
    return node


def node_config(node: Node) -> dict[str, Any]:
    """The node.config frame's fields: what the hub's operators decided about the node. A
    drain the node asked for itself (a shutdown) is its own business, not the hub's word."""
    return {
        "generation": node.config_generation,
        "cordoned": node.cordoned,
        "draining": node.draining and not node.self_draining,
        "capacity": node.capacity,
        "labels": dict(node.labels),
    }


def node_save_config(node: Node, *fields: str) -> Node:
    """Save a change of what the node is told, and tell the node process (after commit)."""
    node.config_generation += 1
    node_save(node, *fields, "config_generation")
    intents.configure_node(node.name, node_config(node))
    return node


def node_settle_drain(node: Node, *, fresh: bool = False) -> None:
    """A node an operator drained stays unschedulable once its last task ended: drained means
    cordoned. A node draining itself for a shutdown stays draining until it says hello.
    ``fresh``: the caller just read the node in this transaction."""
    if not fresh:
        node.refresh_from_db(
            fields=[
                "running",
                "draining",
                "self_draining",
                "cordoned",
                "healthy",
                "config_generation",
            ]
        )
    if node.draining and not node.self_draining and node.running == 0:
        node.draining, node.cordoned = False, True
        node_save_config(node, "draining", "cordoned")


def release_slot(node_id: int | None, session_id: Any = None) -> None:
    """Give back the capacity a bound task held on its node (and tell the scheduler)."""
    if session_id is not None:
        intents.attempt_ended(str(session_id))
    if node_id is not None:
        release_slots({node_id: 1})


def release_slots(freed: Mapping[int, int]) -> None:
    """Give back ``k`` slots on each node (node pk → k), in one lock order, and show the
    nodes as they now are; a node an operator drained may be done draining."""
    if not freed:
        return
    now = Node._meta.get_field("updated_at").get_db_prep_save(timezone.now(), connection)
    lock_node_rows()
    for node_id, k in sorted(freed.items()):
        statements.execute(GIVE_BACK_SLOTS, [k, k, now, node_id])
    for node in read_nodes(*statements.where_in(Node, "id", sorted(freed))):
        events.publish_node(node)
        node_settle_drain(node, fresh=True)
