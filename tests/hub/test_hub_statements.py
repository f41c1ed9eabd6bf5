"""The hot path's plain statements (services.statements) give what the ORM would."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import signals
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext

from hivemind_web.hub.models import Task, TaskEvent, Team
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


@contextlib.contextmanager
def tasks_observed() -> Iterator[list[int]]:
    """Within: a post_init listener on Task notes (the ids of) the tasks built."""
    seen: list[int] = []

    def noted(sender: type, instance: Task, **kwargs: object) -> None:
        seen.append(id(instance))

    signals.post_init.connect(noted, sender=Task)
    statements._without_init_signals.cache_clear()
    try:
        yield seen
    finally:
        signals.post_init.disconnect(noted, sender=Task)
        statements._without_init_signals.cache_clear()


def test_a_model_with_init_listeners_is_still_built_through_init() -> None:
    task = stored()
    with tasks_observed() as seen:
        where, params = statements.where_in(Task, "id", [task.pk])
        [row] = statements.select(Task, ("status",), where, params)
    assert seen == [id(row)]


def test_a_new_row_is_what_the_model_itself_builds() -> None:
    team = Team.objects.create(name="t-new-row")
    values = {"agent_id": "echo", "team": team, "node_selector": {"zone": "a"}, "priority": 3}
    row, orm = statements.new_row(Task, **values), Task(**values)
    for field in Task._meta.concrete_fields:
        if field.name != "session_id":  # a fresh uuid4 each
            assert getattr(row, field.attname) == getattr(orm, field.attname), field.name
    assert row.session_id != orm.session_id
    # Adding, and on the database of the related row (its descriptor sets it), as Task(...).
    assert (row._state.adding, row._state.db) == (orm._state.adding, orm._state.db)
    assert (row._state.adding, row._state.db) == (True, "default")
    assert statements.new_row(Task, agent_id="echo")._state.db is None
    with CaptureQueriesContext(connection) as queries:
        assert row.team is team  # cached by the relation's descriptor, as Task(team=...) does
    assert not queries
    row.save()
    assert Task.objects.get(pk=row.pk).node_selector == {"zone": "a"}


def test_a_new_row_refuses_a_name_the_model_does_not_have() -> None:
    with pytest.raises(TypeError, match="Task has no field colour"):
        statements.new_row(Task, agent_id="echo", colour="red")


def test_a_new_row_of_an_observed_model_is_built_through_init() -> None:
    with tasks_observed() as seen:
        row = statements.new_row(Task, agent_id="echo")
    assert seen == [id(row)]


def test_json_values_are_stored_as_the_field_would_store_them() -> None:
    task = stored()
    labels = {"zone": "eu", "nested": {"list": [1, 2.5, None, True, "ü"]}}
    statements.update(Task, ("id",), ("node_selector", "capabilities"), [[labels, ["a"], task.pk]])
    statements.insert_values(TaskEvent, [{"task_id": task.pk, "kind": "note", "data": ["x", 1]}])
    fresh = Task.objects.get(pk=task.pk)
    assert (fresh.node_selector, fresh.capabilities) == (labels, ["a"])
    assert TaskEvent.objects.get(task=task, kind="note").data == ["x", 1]
    assert Task.objects.filter(node_selector__zone="eu").count() == 1  # JSON, not text


def test_values_inserted_without_instances_get_the_fields_defaults() -> None:
    task = stored()
    statements.insert_values(TaskEvent, [{"task_id": task.pk, "kind": "note"}])
    event = TaskEvent.objects.get(task=task, kind="note")
    assert event.data == {} and event.actor == "" and event.time is not None


def test_statements_off_djangos_cursor_still_raise_djangos_errors() -> None:
    task = stored()
    duplicate = {"session_id": task.session_id, "agent_id": "echo", "strategy": "golem"}
    with pytest.raises(IntegrityError), transaction.atomic():
        statements.insert_values(Task, [duplicate])
    # A transaction that failed refuses further statements until it is rolled back.
    with transaction.atomic():
        with pytest.raises(IntegrityError), transaction.atomic(savepoint=False):
            statements.insert_values(Task, [duplicate])
        with pytest.raises(TransactionManagementError):
            statements.execute(f"UPDATE {statements.table(Task)} SET priority = 1", [])
        transaction.set_rollback(True)
    assert Task.objects.get(pk=task.pk).priority == 0


def test_an_execute_wrapper_sees_every_statement() -> None:
    task = stored()
    seen: list[str] = []

    def record(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        seen.append(sql)
        return execute(sql, params, many, context)

    where, params = statements.where_in(Task, "id", [task.pk])
    with connection.execute_wrapper(record):
        statements.select(Task, ("status",), where, params)
        statements.update(Task, ("id",), ("priority",), [(3, task.pk)])
    assert [sql.split()[0] for sql in seen] == ["SELECT", "UPDATE"]
    assert Task.objects.get(pk=task.pk).priority == 3


def test_datetimes_are_stored_as_the_field_would_store_them() -> None:
    from datetime import datetime, timedelta
    from datetime import timezone as dt_timezone

    from django.db import connections
    from django.utils import timezone

    db = connections["default"]
    field = Task._meta.get_field("updated_at")
    convert = statements._converter(field)
    now = timezone.now()
    for value in (now, now.astimezone(dt_timezone(timedelta(hours=2))), None):
        assert convert(value, db) == field.get_db_prep_save(value, db)
    with pytest.warns(RuntimeWarning):  # a naive datetime still gets Django's warning
        assert convert(datetime(2026, 1, 1), db) is not None
