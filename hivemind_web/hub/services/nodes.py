"""Node services: registration, connection, health, and the operator's actions."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from executor_core.labels import LabelError, node_name_error, validate_labels
from hivemind_web.hub import intents
from hivemind_web.hub.models import HubInstance, Node, NodeLoadSample, Task
from hivemind_web.hub.services import events
from hivemind_web.hub.services.errors import IdentityConflict, NotFound, ServiceValidationError
from hivemind_web.hub.services.identity import hash_token, join_token_redeem
from hivemind_web.hub.services.node_state import (
    lock_node_rows,
    node_save,
    node_save_config,
    node_settle_drain,
)
from hivemind_web.hub.services.orchestrator import tasks_fail_each
from hivemind_web.hub.services.rows import set_fields

ERR_CAPACITY = "capacity must be an integer between 1 and 1024"
ERR_JOIN_TOKEN = "invalid join token"
ERR_NAME_TAKEN = "a node named {name!r} is already registered"
ERR_NAME_BOUND = (
    "a node named {name!r} is already registered, and its name is bound to its token: the "
    "join token cannot issue another. If that node lost its token, rotate it on the hub "
    '(`manage.py node_token {name} --rotate`, or the admin\'s "Rotate token" action), or '
    "register it with a join token made for it (`manage.py join_token create --node {name}`)"
)
MAX_CAPACITY = 1024
NODE_LOST = "node lost"
# A refusing node sits out 1, 2, 4 ... seconds, at most BACKOFF_MAX, per refusal in a row.
BACKOFF_BASE = 1.0
BACKOFF_MAX = 30.0


def get_node(name: str, *, lock: bool = False) -> Node:
    qs = Node.objects.select_for_update() if lock else Node.objects
    node = qs.filter(name=name).first()
    if node is None:
        raise NotFound(f"no node named {name!r}")
    return node


def validate_node_fields(
    *, name: Any = None, labels: Any = None, capacity: Any = None
) -> dict[str, str]:
    errors: dict[str, str] = {}
    if name is not None and (problem := node_name_error(name)):
        errors["name"] = f"node name {problem}"
    if labels is not None:
        try:
            validate_labels(labels)
        except LabelError as exc:
            errors["labels"] = str(exc)
    if capacity is not None and (
        isinstance(capacity, bool)
        or not isinstance(capacity, int)
        or not 1 <= capacity <= MAX_CAPACITY
    ):
        errors["capacity"] = ERR_CAPACITY
    return errors


@transaction.atomic
def node_register(
    *, join_token: str, name: str, labels: Mapping[str, str] | None = None, capacity: int = 1
) -> tuple[Node, str]:
    """Register a node with a join token; returns the node and its new token.

    The token is shown once: only its hash is stored. A name is bound to its token: a taken
    name is refused (IdentityConflict) unless the join token was made for that node, so
    holding the shared join token never lets anyone take over a registered node.
    """
    labels = dict(labels or {})
    errors = validate_node_fields(name=name, labels=labels, capacity=capacity)
    expected = settings.HIVEMIND["JOIN_TOKEN"]
    # As bytes: compare_digest refuses str holding anything but ASCII (a TypeError, a 500).
    given = str(join_token).encode("utf-8", "surrogatepass")
    shared = bool(expected) and hmac.compare_digest(
        given, expected.encode("utf-8", "surrogatepass")
    )
    # Redeemed inside this transaction: a registration refused below does not use it up.
    grant = None if shared else join_token_redeem(str(join_token), name=name)
    if not shared and grant is None:
        raise PermissionError(ERR_JOIN_TOKEN)
    if errors:
        raise ServiceValidationError(errors)
    node = Node.objects.select_for_update().filter(name=name).first()
    if node is not None and not (grant is not None and grant.node_name == name):
        raise IdentityConflict(ERR_NAME_BOUND.format(name=name))
    token = secrets.token_urlsafe(32)
    if node is None:
        try:
            with transaction.atomic():  # two registrations of one new name: one wins
                node = Node.objects.create(
                    name=name, labels=labels, capacity=capacity, token_hash=hash_token(token)
                )
        except IntegrityError:
            raise IdentityConflict(ERR_NAME_BOUND.format(name=name)) from None
    else:  # its own join token: the node rejoins, and the old token stops working
        node.token_hash = hash_token(token)
        node.save(update_fields=["token_hash", "updated_at"])
    events.node_event(
        node, "registered", actor=name, join_token=grant.token_id if grant else "shared"
    )
    events.publish_node(node)
    intents.nodes_changed()
    return node, token


def node_authenticate(token: str) -> Node | None:
    if not token:
        return None
    return Node.objects.filter(token_hash=hash_token(token)).first()


@transaction.atomic
def node_connected(
    *,
    name: str,
    version: str,
    labels: Mapping[str, str],
    capacity: int,
    agents: Iterable[str],
    capabilities: Iterable[str] = (),
    models: Iterable[str] = (),
) -> Node:
    """A node said hello: it is healthy, and what it declares about itself is recorded.

    Labels and capacity are taken from the node only until an operator edits them: the
    operator's word wins after that (as Kubernetes treats labels set on registration).
    """
    node = get_node(name, lock=True)
    node.healthy = True
    node.last_heartbeat = timezone.now()
    node.version = version[:64]
    node.agents = sorted(set(agents))
    node.capabilities, node.models = sorted(set(capabilities)), sorted(set(models))
    fields = ["healthy", "last_heartbeat", "version", "agents", "capabilities", "models"]
    if node.self_draining:  # it shut down and came back: the drain it asked for is over
        node.self_draining = node.draining = False
        fields += ["self_draining", "draining"]
    if not node.operator_edited:
        node.labels, node.capacity = dict(labels), capacity
        fields += ["labels", "capacity"]
    # The bound count is the hub's own figure: recount it rather than trust history.
    node.running = Task.objects.filter(node=node, status__in=["scheduled", "running"]).count()
    fields.append("running")
    events.node_event(node, "connected", actor=name, version=node.version)
    return node_save(node, *fields)


@transaction.atomic
def node_disconnected(*, name: str) -> None:
    """The socket closed. Health is left to the heartbeat grace (a blip must not fail tasks)."""
    Node.objects.filter(name=name).update(updated_at=timezone.now())


def node_flush_heartbeats(
    beats: Mapping[str, Mapping[str, Any]],
    *,
    samples: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Write a batch of heartbeats (name → {time, running, cpu, mem}) in a few statements.
    ``samples`` (the latest beat of each node since the last sample) are kept as load
    history for the plots, and those nodes are shown on the board; a node coming back to
    health is shown at once."""
    samples = samples or {}
    if not beats and not samples:
        return
    with transaction.atomic():
        changed = ["last_heartbeat", "cpu", "mem", "free_memory_mb", "free_disk_mb"]
        nodes = list(
            Node.objects.filter(name__in=list(beats)).only("id", "name", "healthy", *changed)
        )
        revived = []
        for node in nodes:
            beat = beats[node.name]
            node.last_heartbeat, node.cpu, node.mem = beat["time"], beat["cpu"], beat["mem"]
            node.free_memory_mb = beat.get("free_memory_mb")
            node.free_disk_mb = beat.get("free_disk_mb")
            if not node.healthy:  # back within the lost window: ready again at once
                revived.append(node)
        if nodes:
            lock_node_rows()
            set_fields(nodes, changed)
        for node in revived:
            node.refresh_from_db()  # the whole row, to show it (rare: a node came back)
            node.healthy = True
            node_save(node, "healthy")
        if not samples:
            return
        shown = {n.name for n in revived}
        sampled = list(Node.objects.filter(name__in=list(samples)))
        NodeLoadSample.objects.bulk_create(
            [
                NodeLoadSample(
                    node=node,
                    time=samples[node.name]["time"],
                    running=samples[node.name]["running"],
                    cpu=samples[node.name]["cpu"],
                    mem=samples[node.name]["mem"],
                )
                for node in sampled
            ],
            batch_size=500,
        )
        for node in sampled:
            if node.name not in shown:
                events.publish_node(node)


def node_mark_stale(*, silent_since: datetime, heard: Iterable[str] = ()) -> list[str]:
    """Nodes silent since ``silent_since`` become not_ready. Returns their names.
    ``heard``: nodes the caller heard from since then (their heartbeats may not be written
    yet), which are not silent."""
    names = []
    with transaction.atomic():
        stale = (
            Node.objects.select_for_update()
            .filter(healthy=True, last_heartbeat__lt=silent_since)
            .exclude(name__in=list(heard))
        )
        for node in stale:
            node.healthy = False
            node_save(node, "healthy")
            events.node_event(node, "not_ready", last_heartbeat=node.last_heartbeat.isoformat())
            names.append(node.name)
    return names


def lost_nodes(*, now: datetime, lost_after: timedelta) -> list[int]:
    """The nodes no hub has heard from for ``lost_after`` (DESIGN §13).

    Every hub writes the heartbeats it hears to the node row, so ``last_heartbeat`` is the
    latest any hub heard. A node whose connection is held by a hub process counts as silent
    only once that hub renewed its lease ``lost_after`` past the node's last heartbeat: the
    hub was listening all that time and heard nothing. While that hub is itself silent (it
    died, or stalls), nobody can tell; once its lease runs out its nodes get the whole window
    again, from then, to reach another hub (``silence_counts_from``).
    """
    candidates = list(
        Node.objects.filter(healthy=False, last_heartbeat__lt=now - lost_after).values_list(
            "pk", "last_heartbeat", "silence_counts_from", "connection_hub"
        )
    )
    hubs = {h for *_, h in candidates if h}
    seen = dict(
        HubInstance.objects.filter(name__in=hubs).values_list("name", "last_seen") if hubs else []
    )
    lost = []
    for pk, heartbeat, counts_from, hub in candidates:
        silent_since = max(heartbeat, counts_from) if counts_from else heartbeat
        listened_until = seen.get(hub, now) if hub else now
        if min(now, listened_until) - silent_since >= lost_after:
            lost.append(pk)
    return lost


def node_fail_lost_tasks(*, now: datetime, lost_after: timedelta) -> list[str]:
    """Fail the tasks of nodes no hub heard from for ``lost_after`` ("node lost"); the team
    decides next."""
    lost = lost_nodes(now=now, lost_after=lost_after)
    if not lost:
        return []
    tasks = Task.objects.filter(node__in=lost, status__in=["scheduled", "running"])
    return tasks_fail_each(tasks, error=NODE_LOST, actor="system")


def nodes_release_hub(*, instance: str) -> int:
    """The hub process ``instance`` is gone, and the node connections it held with it: they
    hold nothing any more, and their nodes' silence counts from now."""
    return Node.objects.filter(connection_hub=instance).update(
        connection_hub="", connection_channel="", silence_counts_from=timezone.now()
    )


def _set_intent(name: str, kind: str, actor: Any, **intent: bool) -> Node:
    with transaction.atomic():
        node = get_node(name, lock=True)
        for field, value in intent.items():
            setattr(node, field, value)
        node_save_config(node, *intent)
        events.node_event(node, kind, actor=actor)
    return node


def node_cordon(*, name: str, actor: Any) -> Node:
    return _set_intent(name, "cordoned", actor, cordoned=True)


def node_uncordon(*, name: str, actor: Any) -> Node:
    return _set_intent(
        name, "uncordoned", actor, cordoned=False, draining=False, self_draining=False
    )


def node_self_drain(*, name: str) -> Node:
    """The node said it is draining: no new work for it until it says hello again. When an
    operator's drain is already in force, the node is only acknowledging that one."""
    with transaction.atomic():
        node = get_node(name, lock=True)
        if node.draining:
            return node
        node.draining = node.self_draining = True
        events.node_event(node, "shutting_down", actor=name)
        return node_save(node, "draining", "self_draining")


def node_drain(*, name: str, actor: Any) -> Node:
    """No new work; the node shows draining until its tasks end, then stays cordoned."""
    node = _set_intent(name, "drain", actor, draining=True)
    with transaction.atomic():
        node_settle_drain(node)
    return node


@transaction.atomic
def node_update(
    *, name: str, actor: Any, labels: Mapping[str, str] | None = None, capacity: int | None = None
) -> Node:
    errors = validate_node_fields(labels=labels, capacity=capacity)
    if errors:
        raise ServiceValidationError(errors)
    node = get_node(name, lock=True)
    fields = ["operator_edited"]
    node.operator_edited = True
    if labels is not None:
        node.labels = dict(labels)
        fields.append("labels")
    if capacity is not None:
        node.capacity = capacity
        fields.append("capacity")
    changes = {"labels": labels, "capacity": capacity}
    events.node_event(
        node, "edited", actor=actor, **{k: v for k, v in changes.items() if v is not None}
    )
    return node_save_config(node, *fields)


@transaction.atomic
def node_create(
    *, name: str, labels: Mapping[str, str] | None = None, capacity: int = 1
) -> tuple[Node, str]:
    """Create a node record by hand (admin, CLI) and return its token, shown once."""
    errors = validate_node_fields(name=name, labels=labels or {}, capacity=capacity)
    if not errors and Node.objects.filter(name=name).exists():
        errors["name"] = ERR_NAME_TAKEN.format(name=name)
    if errors:
        raise ServiceValidationError(errors)
    token = secrets.token_urlsafe(32)
    node = Node.objects.create(
        name=name, labels=dict(labels or {}), capacity=capacity, token_hash=hash_token(token)
    )
    events.node_event(node, "created")
    events.publish_node(node)
    intents.nodes_changed()
    return node, token


@transaction.atomic
def node_report_state(*, name: str, state: Mapping[str, Any]) -> Node:
    """The node applied a node.config (or was welcomed) and says what it now is. A node that
    took the hub's word gets another chance at once if it was backed off for refusing."""
    node = get_node(name, lock=True)
    node.reported = {**state, "at": timezone.now().isoformat()}
    fields = ["reported"]
    if node.refusals or node.backoff_until:
        node.refusals, node.backoff_until = 0, None
        fields += ["refusals", "backoff_until"]
    return node_save(node, *fields)


def backoff_seconds(refusals: int) -> float:
    return min(BACKOFF_MAX, BACKOFF_BASE * 2 ** max(0, refusals - 1))


@transaction.atomic
def node_refused(*, name: str, session_id: str, reason: str) -> Node:
    """The node refused an assignment: it sits out a back-off, so the scheduler does not
    keep sending work to a node that looks empty but takes none (DESIGN §14)."""
    node = get_node(name, lock=True)
    now = timezone.now()
    node.refusals += 1
    node.last_refusal, node.refused_at = reason, now
    pause = backoff_seconds(node.refusals)
    node.backoff_until = now + timedelta(seconds=pause)
    events.node_event(node, "refused", actor=name, session_id=session_id, reason=reason,
                      backoff=pause)  # fmt: skip
    return node_save(node, "refusals", "last_refusal", "refused_at", "backoff_until")


@transaction.atomic
def node_accepting(*, name: str) -> None:
    """The node accepted an assignment after refusing some: its back-off is over."""
    node = get_node(name, lock=True)
    if node.refusals or node.backoff_until:
        node.refusals, node.backoff_until = 0, None
        node_save(node, "refusals", "backoff_until")


def node_prune_samples(*, before: datetime) -> int:
    return NodeLoadSample.objects.filter(time__lt=before).delete()[0]
