"""The hot path's reads and writes as plain SQL statements, built from the models' metadata.

A queryset compiles its SQL anew on every call: for the handful of rows a hot transition
touches, Django spends ~0.2 ms building the statement and ~0.015 ms running it (measured with
``bench/writer.py``). The writer applies thousands of transitions a second (DESIGN §10), so
the statements it runs for every task are written here once per shape, with the columns,
the conversions and the prepared values the ORM would use, and executed on the same
connection, in the same transaction. Everything else keeps the ORM.

Rows come back as model instances (``Model.from_db``): the services use them as they use
querysets' rows. Fields left out of a read are deferred, as with ``.only()``: reading one
later costs a query, so each read names what its callers use.

Each statement looks its connection up once (``_db``; not at all inside ``pinned``):
``django.db.connection`` is a proxy that finds the current thread's connection through
asgiref's ``Local`` on every attribute, and passed to each field's conversion it cost the
writer an eighth of its time. And a value that already is what the column stores (a ``str``
for a text column, an ``int`` for an integer one, ``None`` where allowed) skips the field's
conversion chain (``_converters``): a task's insert converts forty values.

The statements run on the backend's own DB-API cursor (``_run``), with the SQL text already in
the driver's placeholder style: Django's cursor wrapper costs twice what SQLite takes to run
a one-row statement (~50 µs against ~22), and rewrites ``%s`` to ``?`` with a regex on every
call. Errors are still Django's (``wrap_database_errors``), a broken transaction still
refuses statements, and whenever something observes statements (an ``execute_wrapper``,
``DEBUG``'s query log, ``CaptureQueriesContext``) they go through Django's cursor as before.
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import signals
from django.db.models.base import ModelState
from django.utils import timezone

M = TypeVar("M", bound=models.Model)
# Rows per multi-row INSERT: well under SQLite's limit of bound parameters for wide rows.
INSERT_CHUNK = 200


class _Pinned(threading.local):
    db: BaseDatabaseWrapper | None = None


_PINNED = _Pinned()


def _db() -> BaseDatabaseWrapper:
    return _PINNED.db or connections[DEFAULT_DB_ALIAS]


@contextlib.contextmanager
def pinned() -> Iterator[None]:
    """Within: this thread's statements use its connection without looking it up each time.
    The writer pins it around a batch; a lookup goes through asgiref's ``Local`` (~2 µs, a
    dozen times per task). Sync threads only: on an event loop the connection belongs to the
    async context, not to the thread."""
    _PINNED.db = connections[DEFAULT_DB_ALIAS]
    try:
        yield
    finally:
        _PINNED.db = None


# The placeholder rewrite of Django's SQLite cursor (``%s`` to ``?``, ``%%`` to ``%``).
_QMARK = re.compile(r"(?<!%)%s")
_FAST_VENDORS = {"sqlite", "postgresql"}


@functools.lru_cache(maxsize=512)
def _driver_sql(sql: str, vendor: str) -> str:
    """``sql`` in the placeholder style of the vendor's driver (psycopg takes ``%s``)."""
    return _QMARK.sub("?", sql).replace("%%", "%") if vendor == "sqlite" else sql


def _run(
    db: BaseDatabaseWrapper,
    sql: str,
    params: Sequence[Any],
    *,
    many: bool = False,
    fetch: bool = False,
) -> Any:
    """Execute ``sql`` (``executemany`` for ``many``); the rows when ``fetch``, else the
    count of rows changed."""
    if db.execute_wrappers or db.queries_logged or db.vendor not in _FAST_VENDORS:
        with db.cursor() as cursor:
            (cursor.executemany if many else cursor.execute)(sql, params)
            return cursor.fetchall() if fetch else cursor.rowcount
    if db.connection is None:
        db.ensure_connection()
    db.validate_no_broken_transaction()
    with db.wrap_database_errors:
        # SQLite: a plain cursor (Django's own rewrites placeholders per call); PostgreSQL:
        # the backend's cursor, with its time-zone loader.
        cursor = db.connection.cursor() if db.vendor == "sqlite" else db.create_cursor()
        try:
            text = _driver_sql(sql, db.vendor)
            (cursor.executemany if many else cursor.execute)(text, params)
            return cursor.fetchall() if fetch else cursor.rowcount
        finally:
            cursor.close()


def _quote(name: str, db: BaseDatabaseWrapper | None = None) -> str:
    return (db or _db()).ops.quote_name(name)


# Django's own field classes whose database value, on every backend, is the Python value
# itself when it already has one of these types: their conversions only coerce.
_AS_IS: dict[type[models.Field], tuple[type, ...]] = {
    models.CharField: (str,),
    models.TextField: (str,),
    models.BooleanField: (bool,),
    models.FloatField: (float,),
    models.IntegerField: (int,),
    models.PositiveIntegerField: (int,),
    models.BigIntegerField: (int,),
    models.AutoField: (int,),
    models.BigAutoField: (int,),
}
Converter = Callable[[Any, BaseDatabaseWrapper], Any]


# Classes that store None as NULL (a JSONField would store it as JSON null).
_NONE_IS_NULL = {*_AS_IS, models.DateTimeField, models.UUIDField}


def _as_is_types(field: models.Field) -> tuple[type, ...]:
    if isinstance(field, models.ForeignKey):
        found = _as_is_types(field.target_field)
        return (*found, type(None)) if found and field.null else found
    found = _AS_IS.get(type(field), ())
    return (*found, type(None)) if field.null and type(field) in _NONE_IS_NULL else found


def _converter(field: models.Field) -> Converter:
    """``field.get_db_prep_save``, short-cut for values that need no conversion."""
    prep, as_is = field.get_db_prep_save, _as_is_types(field)
    if type(field) is models.DateTimeField:
        return _datetime_converter(prep)
    if type(field) is models.JSONField:
        return _json_converter(field.encoder, prep)
    if not as_is:
        return prep

    def convert(value: Any, db: BaseDatabaseWrapper) -> Any:
        return value if type(value) in as_is else prep(value, db)

    return convert


def _datetime_converter(prep: Converter) -> Converter:
    """An aware datetime in the connection's own time zone (every ``timezone.now()``) as
    the backend's ``adapt_datetimefield_value`` stores it: PostgreSQL takes it as it is,
    SQLite as its naive text. (``db.timezone`` is None without USE_TZ: then, and for any
    other value, the field's own chain.)"""

    def convert(value: Any, db: BaseDatabaseWrapper) -> Any:
        if type(value) is datetime and value.tzinfo is not None and value.tzinfo is db.timezone:
            if db.vendor == "postgresql":
                return value
            if db.vendor == "sqlite":
                return str(value.replace(tzinfo=None))
        return prep(value, db)

    return convert


def _json_converter(encoder: Any, prep: Converter) -> Converter:
    """A dict or list as the backend stores JSON (``adapt_json_value``: text on SQLite, a
    Jsonb adapter on PostgreSQL). The field's chain above it only looks for expressions and
    lazy strings, and a task row has seven JSON columns. Anything else: the chain."""

    def convert(value: Any, db: BaseDatabaseWrapper) -> Any:
        if type(value) is dict or type(value) is list:
            return db.ops.adapt_json_value(value, encoder)
        return prep(value, db)

    return convert


def _converters(fields: Sequence[models.Field]) -> tuple[Converter, ...]:
    return tuple(_converter(f) for f in fields)


def _placeholders(count: int) -> str:
    return ", ".join(["%s"] * count)


@functools.lru_cache(maxsize=64)
def _columns(
    model: type[models.Model], names: tuple[str, ...], vendor: str
) -> tuple[str, tuple[str, ...], tuple[tuple[int, list[Any], Any], ...]]:
    """The select list for ``names`` (plus the pk), their attnames and their converters."""
    db, meta = _db(), model._meta
    # In the model's field order: that is how ``Model.from_db`` takes a row of some fields.
    wanted = {meta.pk.name, *names}
    fields = [f for f in meta.concrete_fields if f.name in wanted]
    select = ", ".join(_quote(f.column, db) for f in fields)
    converters = []
    for i, field in enumerate(fields):
        col = field.get_col(meta.db_table)
        found = db.ops.get_db_converters(col) + col.get_db_converters(db)
        if found:
            converters.append((i, found, col))
    return select, tuple(f.attname for f in fields), tuple(converters)


def select(
    model: type[M],
    names: Sequence[str],
    where: str,
    params: Sequence[Any],
    *,
    lock: bool = False,
    order_by_pk: bool = True,
) -> list[M]:
    """``SELECT names FROM model WHERE where`` as model instances, locked until the
    transaction ends when ``lock`` (rows in pk order: one lock order for every hub)."""
    db = _db()
    columns, attnames, converters = _columns(model, tuple(names), db.vendor)
    sql = f"SELECT {columns} FROM {_quote(model._meta.db_table, db)} WHERE {where}"
    if order_by_pk:
        sql += f" ORDER BY {_quote(model._meta.pk.column, db)}"
    if lock and db.features.has_select_for_update:
        sql += " FOR UPDATE"
    rows = _run(db, sql, list(params), fetch=True)
    objs, alias = [], db.alias
    plain = _without_init_signals(model)
    build = functools.partial(_plain_instance, model) if plain else model.from_db
    for row in rows:
        if converters:
            row = list(row)
            for i, functions, col in converters:
                value = row[i]
                for convert in functions:
                    value = convert(value, col, db)
                row[i] = value
        objs.append(build(alias, attnames, row))
    return objs


_MODEL_FROM_DB = models.Model.from_db.__func__  # type: ignore[attr-defined]


@functools.lru_cache(maxsize=64)
def _without_init_signals(model: type[models.Model]) -> bool:
    """The model builds rows as Django's own do (no ``__init__`` or ``from_db`` of its own)
    and nothing listens to its pre_init/post_init (asked once all apps are loaded: the first
    read happens after that)."""
    own_from_db = getattr(model.from_db, "__func__", None)
    plain = model.__init__ is models.Model.__init__ and own_from_db is _MODEL_FROM_DB
    listened = signals.pre_init.has_listeners(model) or signals.post_init.has_listeners(model)
    return plain and not listened


def _plain_instance(model: type[M], alias: str, attnames: tuple[str, ...], row: Sequence[Any]) -> M:
    """What ``Model.from_db`` makes of a row of some fields, without running ``__init__``
    field by field (a task row is forty fields, and reading rows is the writer's biggest
    cost): the values in the instance's ``__dict__``, the fields left out deferred (they load
    on first access, as with ``.only()``). Only for models nobody observes being built."""
    obj = model.__new__(model)
    obj.__dict__.update(zip(attnames, row, strict=True))
    state = ModelState()
    state.adding, state.db = False, alias
    obj._state = state
    return obj


@functools.lru_cache(maxsize=64)
def _blank(
    model: type[models.Model],
) -> tuple[frozenset[str], tuple[tuple[str, str, Callable[[], Any], bool], ...]]:
    """The names ``new_row`` takes, and per concrete field: its name, attname, default and
    whether it is a relation."""
    fields = model._meta.concrete_fields
    names = frozenset(name for f in fields for name in (f.name, f.attname))
    return names, tuple((f.name, f.attname, f.get_default, f.is_relation) for f in fields)


def new_row(model: type[M], /, **values: Any) -> M:
    """What ``model(**values)`` builds (unsaved; a field not given at its default) without
    ``Model.__init__``'s walk through every field, a third of storing a task. A related row
    is given by its field's name (``team=row``), any other value by attname. Only for models
    nobody observes being built (else ``model(**values)`` itself)."""
    names, fields = _blank(model)
    if not values.keys() <= names:
        unknown = ", ".join(sorted(values.keys() - names))
        raise TypeError(f"{model.__name__} has no field {unknown}")
    if not _without_init_signals(model):
        return model(**values)
    obj = model.__new__(model)
    obj._state = ModelState()  # adding, no database yet: as __init__ leaves it
    data = obj.__dict__
    for name, attname, default, relation in fields:
        if relation and name in values:
            setattr(obj, name, values[name])  # the descriptor sets the key and caches the row
        elif attname in values:
            data[attname] = values[attname]
        else:
            data[attname] = default()
    return obj


def where_in(model: type[models.Model], name: str, values: Sequence[Any]) -> tuple[str, list]:
    """A ``column IN (...)`` condition and its prepared parameters."""
    if not values:
        return "1 = 0", []  # PostgreSQL refuses an empty IN list
    db, field = _db(), model._meta.get_field(name)
    params = [field.get_db_prep_value(v, db, prepared=False) for v in values]
    return f"{_quote(field.column, db)} IN ({_placeholders(len(params))})", params


@functools.lru_cache(maxsize=64)
def _update_sql(
    model: type[models.Model], keys: tuple[str, ...], names: tuple[str, ...], vendor: str
) -> tuple[str, tuple[Converter, ...]]:
    meta = model._meta
    fields = tuple(meta.get_field(n) for n in (*names, *keys))
    sets = ", ".join(f"{_quote(f.column)} = %s" for f in fields[: len(names)])
    match = " AND ".join(f"{_quote(f.column)} = %s" for f in fields[len(names) :])
    return f"UPDATE {_quote(meta.db_table)} SET {sets} WHERE {match}", _converters(fields)


def update(
    model: type[models.Model], keys: Sequence[str], names: Sequence[str], rows: Iterable[Sequence]
) -> None:
    """``UPDATE model SET names WHERE keys`` for each row (the values of ``names``, then of
    ``keys``): one statement text, executed for all rows."""
    db = _db()
    sql, converters = _update_sql(model, tuple(keys), tuple(names), db.vendor)
    params = [[c(v, db) for c, v in zip(converters, row, strict=True)] for row in rows]
    if params:
        _run(db, sql, params, many=True)


@functools.lru_cache(maxsize=64)
def _insert_sql(
    model: type[models.Model], conflict: tuple[str, ...], refresh: tuple[str, ...], vendor: str
) -> tuple[str, str, str, tuple[tuple[models.Field, Converter], ...]]:
    """The head (``INSERT INTO t (cols) VALUES ``), one row's placeholders, the conflict
    clause and the fields written with their converters, in column order."""
    meta = model._meta
    fields = tuple(f for f in meta.concrete_fields if not f.primary_key)
    head = "INSERT INTO {} ({}) VALUES ".format(
        _quote(meta.db_table), ", ".join(_quote(f.column) for f in fields)
    )
    tail = ""
    if conflict:
        unique = ", ".join(_quote(meta.get_field(n).column) for n in conflict)
        sets = ", ".join(
            f"{c} = EXCLUDED.{c}" for c in (_quote(meta.get_field(n).column) for n in refresh)
        )
        tail = f" ON CONFLICT ({unique}) DO UPDATE SET {sets}"
    written = tuple(zip(fields, _converters(fields), strict=True))
    return head, f"({_placeholders(len(fields))})", tail, written


def _run_insert(
    db: BaseDatabaseWrapper,
    model: type[models.Model],
    head: str,
    row: str,
    tail: str,
    params: list[list[Any]],
    objs: Sequence[models.Model] | None,
) -> None:
    """Run an insert; with ``objs``, set each one's pk from the database."""
    if objs is None:
        _run(db, head + row + tail, params, many=True)
        return
    returning = f" RETURNING {_quote(model._meta.pk.column, db)}"
    for start in range(0, len(objs), INSERT_CHUNK):
        chunk = params[start : start + INSERT_CHUNK]
        sql = head + ", ".join([row] * len(chunk)) + tail + returning
        keys = _run(db, sql, [value for values in chunk for value in values], fetch=True)
        for obj, (pk,) in zip(objs[start : start + INSERT_CHUNK], keys, strict=True):
            obj.pk = pk
            obj._state.adding, obj._state.db = False, db.alias


def insert(
    objs: Sequence[models.Model],
    *,
    conflict: Sequence[str] = (),
    refresh: Sequence[str] = (),
    keys: bool = False,
) -> None:
    """Insert unsaved instances of one model (every column but the key, as ``save`` would
    write it). With ``conflict`` (the fields of a unique constraint), a row that exists gets
    the ``refresh`` fields of the new one instead. ``keys``: set each instance's pk from
    the database (one multi-row statement per chunk, where the backend can say them)."""
    if not objs:
        return
    db, model = _db(), type(objs[0])
    if keys and not db.features.can_return_rows_from_bulk_insert:
        model.objects.bulk_create(objs, batch_size=INSERT_CHUNK)
        return
    head, row, tail, fields = _insert_sql(model, tuple(conflict), tuple(refresh), db.vendor)
    params = [[c(f.pre_save(obj, True), db) for f, c in fields] for obj in objs]
    _run_insert(db, model, head, row, tail, params, objs if keys else None)


def insert_values(
    model: type[models.Model],
    rows: Sequence[dict[str, Any]],
    *,
    conflict: Sequence[str] = (),
    refresh: Sequence[str] = (),
) -> None:
    """``insert`` for rows given as ``{attname: value}``, without building instances (an
    instance costs more than converting its row): a column a row leaves out gets its
    field's default, or the time now where the field is ``auto_now(_add)``."""
    if not rows:
        return
    db = _db()
    head, row, tail, fields = _insert_sql(model, tuple(conflict), tuple(refresh), db.vendor)
    now = timezone.now()
    defaults = {
        f.attname: now
        if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)
        # Fresh per call: a mutable default (a dict) is never shared between calls.
        else f.get_default()
        for f, _ in fields
    }
    params = [
        [c(values.get(f.attname, defaults[f.attname]), db) for f, c in fields] for values in rows
    ]
    _run_insert(db, model, head, row, tail, params, None)


def execute(sql: str, params: Sequence[Any]) -> int:
    """A statement of the caller's own (tables and columns quoted by ``table``/``column``);
    the number of rows it changed."""
    return _run(_db(), sql, list(params))


def table(model: type[models.Model]) -> str:
    return _quote(model._meta.db_table)


def column(model: type[models.Model], name: str) -> str:
    return _quote(model._meta.get_field(name).column)
