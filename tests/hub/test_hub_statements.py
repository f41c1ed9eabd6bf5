"""The hot path's plain statements (services.statements) give what the ORM would."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.models import signals
from django.test.utils import CaptureQueriesContext

from hivemind_web.hub.models import Task, TaskEvent
from hivemind_web.hub.services import statements, submission

pytestmark = pytest.mark.django_db


def stored() -> Task:
    return submission.task_submit(actor=None, agent_id="echo", strategy="golem", start=False)


def test_a_row_read_is_the_model_instance_the_orm_reads() -> None:
    task = stored()
    where, params = statements.where_in(Task, "session_id", [task.session_id])
    [row] = statements.select(Task, ("session_id", "status", "node_selector"), where, params)
    orm = Task.objects.only("session_id", "status", "node_selector").get(pk=task.pk)
    assert (row.pk, row.session_id, row.status, row.node_selector) == (
        orm.pk,
        orm.session_id,
        orm.status,
        orm.node_selector,
    )
    assert not row._state.adding and row._state.db == "default"
    assert row.get_deferred_fields() == orm.get_deferred_fields()
    with CaptureQueriesContext(connection) as queries:
        assert row.agent_id == "echo"  # a field left out loads on first access
    assert len(queries) == 1
    row.status = "cancelled"
    row.save(update_fields=["status"])
    assert Task.objects.get(pk=task.pk).status == "cancelled"


def test_a_model_with_init_listeners_is_still_built_through_init() -> None:
    task = stored()
    seen: list[int] = []

    def noted(sender: type, instance: Task, **kwargs: object) -> None:
        seen.append(id(instance))

    signals.post_init.connect(noted, sender=Task)
    statements._without_init_signals.cache_clear()
    try:
        where, params = statements.where_in(Task, "id", [task.pk])
        [row] = statements.select(Task, ("status",), where, params)
    finally:
        signals.post_init.disconnect(noted, sender=Task)
        statements._without_init_signals.cache_clear()
    assert seen == [id(row)]


def test_values_inserted_without_instances_get_the_fields_defaults() -> None:
    task = stored()
    statements.insert_values(TaskEvent, [{"task_id": task.pk, "kind": "note"}])
    event = TaskEvent.objects.get(task=task, kind="note")
    assert event.data == {} and event.actor == "" and event.time is not None
