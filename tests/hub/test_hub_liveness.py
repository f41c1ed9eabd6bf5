"""Node liveness shared by every hub process (DESIGN §13): a node is lost only when no hub
heard from it, and the silence of a node whose hub itself went quiet does not count until
that hub is known dead; from then the node has the whole window to reach another hub."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from runtime_support import bound_task, ready_node, task_row

from hivemind_web.hub.execution.reaper import reap_expired_instances
from hivemind_web.hub.models import HubInstance, Node
from hivemind_web.hub.services import identity
from hivemind_web.hub.services import nodes as node_services

pytestmark = pytest.mark.django_db

LOST_AFTER = timedelta(seconds=30)


def silent_node(name: str, *, for_: timedelta, hub: str = "") -> str:
    """A node holding one running task, last heard ``for_`` ago, connected through ``hub``."""
    ready_node(name)
    sid = bound_task(name, running=True)
    if hub:
        identity.node_claim_connection(name=name, channel=f"{hub}!c", seen_epoch=0, hub=hub)
    Node.objects.filter(name=name).update(
        healthy=False, last_heartbeat=timezone.now() - for_, status=Node.Status.NOT_READY
    )
    return sid


def lease(hub: str, *, age: timedelta) -> None:
    HubInstance.objects.create(name=hub, last_seen=timezone.now() - age)


def fail_lost() -> list[str]:
    return node_services.node_fail_lost_tasks(now=timezone.now(), lost_after=LOST_AFTER)


def test_a_node_no_hub_heard_from_is_lost() -> None:
    sid = silent_node("n1", for_=timedelta(seconds=31))
    assert fail_lost() == [sid]
    assert (task_row(sid).status, task_row(sid).error) == ("failed", node_services.NODE_LOST)


def test_a_node_whose_hub_kept_listening_and_heard_nothing_is_lost() -> None:
    lease("hub-a", age=timedelta(seconds=0))
    sid = silent_node("n1", for_=timedelta(seconds=31), hub="hub-a")
    assert fail_lost() == [sid]


def test_a_node_whose_hub_went_quiet_is_not_judged_by_its_silence() -> None:
    # hub-a stopped renewing its lease 25 s ago, 6 s after it last heard the node.
    lease("hub-a", age=timedelta(seconds=25))
    sid = silent_node("n1", for_=timedelta(seconds=31), hub="hub-a")
    assert fail_lost() == []
    assert task_row(sid).status == "running"


def test_once_its_hub_is_reaped_a_node_gets_the_whole_window_from_then() -> None:
    lease("hub-a", age=timedelta(seconds=25))
    sid = silent_node("n1", for_=timedelta(seconds=31), hub="hub-a")
    reap_expired_instances(timezone.now() - timedelta(seconds=20), alive="hub-b")
    node = Node.objects.get(name="n1")
    assert (node.connection_hub, node.connection_channel) == ("", "")
    assert node.silence_counts_from is not None
    assert fail_lost() == []
    Node.objects.filter(name="n1").update(
        silence_counts_from=timezone.now() - timedelta(seconds=31)
    )
    assert fail_lost() == [sid]


def test_a_node_heard_again_is_not_lost() -> None:
    lease("hub-a", age=timedelta(seconds=25))
    silent_node("n1", for_=timedelta(seconds=31), hub="hub-a")
    node_services.node_flush_heartbeats(
        {"n1": {"time": timezone.now(), "running": 1, "cpu": 1.0, "mem": 1.0}}
    )
    HubInstance.objects.filter(name="hub-a").update(last_seen=timezone.now())
    assert fail_lost() == []
