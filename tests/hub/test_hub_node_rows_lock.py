"""Two hubs' write batches meeting the same nodes in opposite orders both commit.

Each hub's writer applies a batch of transitions in one transaction; a batch gives back a
slot on one node, then on another, in the order its calls came. On PostgreSQL two such
batches used to deadlock (one lost after a second and was applied again); the node rows'
advisory lock puts them in one order instead.
"""

from __future__ import annotations

import threading

import pytest
from django.conf import settings
from django.db import connection, transaction

from hivemind_web.hub.models import Node
from hivemind_web.hub.services.node_state import release_slots

pytestmark = [
    pytest.mark.skipif(
        "postgresql" not in settings.DATABASES["default"]["ENGINE"],
        reason="PostgreSQL only: SQLite runs one write transaction at a time",
    ),
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


def test_two_batches_giving_back_slots_in_opposite_node_orders_both_commit() -> None:
    a = Node.objects.create(name="a", capacity=4, running=2, healthy=True)
    b = Node.objects.create(name="b", capacity=4, running=2, healthy=True)
    first_wrote, second_wrote = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def batch(order: tuple[Node, Node], before: threading.Event | None, after: threading.Event):
        try:
            if before is not None:
                before.wait(timeout=10)
            with transaction.atomic():
                release_slots({order[0].pk: 1})
                after.set()
                # Give the other batch the chance to write its first node (without the lock
                # it does, and the two then wait on each other).
                (second_wrote if after is first_wrote else first_wrote).wait(timeout=1)
                release_slots({order[1].pk: 1})
        except BaseException as exc:  # whatever a batch raised, the test reports
            errors.append(exc)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=batch, args=((a, b), None, first_wrote)),
        threading.Thread(target=batch, args=((b, a), first_wrote, second_wrote)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    assert sorted(Node.objects.values_list("name", "running")) == [("a", 0), ("b", 0)]
