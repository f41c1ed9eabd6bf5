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
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from django.db import connection, models

M = TypeVar("M", bound=models.Model)
# Rows per multi-row INSERT: well under SQLite's limit of bound parameters for wide rows.
INSERT_CHUNK = 200


def _quote(name: str) -> str:
    return connection.ops.quote_name(name)


def _placeholders(count: int) -> str:
    return ", ".join(["%s"] * count)


@functools.lru_cache(maxsize=64)
def _columns(
    model: type[models.Model], names: tuple[str, ...], vendor: str
) -> tuple[str, tuple[str, ...], tuple[tuple[int, list[Any], Any], ...]]:
    """The select list for ``names`` (plus the pk), their attnames and their converters."""
    meta = model._meta
    # In the model's field order: that is how ``Model.from_db`` takes a row of some fields.
    wanted = {meta.pk.name, *names}
    fields = [f for f in meta.concrete_fields if f.name in wanted]
    select = ", ".join(_quote(f.column) for f in fields)
    converters = []
    for i, field in enumerate(fields):
        col = field.get_col(meta.db_table)
        found = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
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
    columns, attnames, converters = _columns(model, tuple(names), connection.vendor)
    sql = f"SELECT {columns} FROM {_quote(model._meta.db_table)} WHERE {where}"
    if order_by_pk:
        sql += f" ORDER BY {_quote(model._meta.pk.column)}"
    if lock and connection.features.has_select_for_update:
        sql += " FOR UPDATE"
    with connection.cursor() as cursor:
        cursor.execute(sql, list(params))
        rows = cursor.fetchall()
    objs = []
    for row in rows:
        if converters:
            row = list(row)
            for i, functions, col in converters:
                value = row[i]
                for convert in functions:
                    value = convert(value, col, connection)
                row[i] = value
        objs.append(model.from_db(connection.alias, attnames, row))
    return objs


def where_in(model: type[models.Model], name: str, values: Sequence[Any]) -> tuple[str, list]:
    """A ``column IN (...)`` condition and its prepared parameters."""
    if not values:
        return "1 = 0", []  # PostgreSQL refuses an empty IN list
    field = model._meta.get_field(name)
    params = [field.get_db_prep_value(v, connection, prepared=False) for v in values]
    return f"{_quote(field.column)} IN ({_placeholders(len(params))})", params


def update(
    model: type[models.Model], keys: Sequence[str], names: Sequence[str], rows: Iterable[Sequence]
) -> None:
    """``UPDATE model SET names WHERE keys`` for each row (the values of ``names``, then of
    ``keys``): one statement text, executed for all rows."""
    meta = model._meta
    fields = [meta.get_field(n) for n in (*names, *keys)]
    sets = ", ".join(f"{_quote(f.column)} = %s" for f in fields[: len(names)])
    match = " AND ".join(f"{_quote(f.column)} = %s" for f in fields[len(names) :])
    sql = f"UPDATE {_quote(meta.db_table)} SET {sets} WHERE {match}"
    params = [
        [f.get_db_prep_save(v, connection) for f, v in zip(fields, row, strict=True)]
        for row in rows
    ]
    if params:
        with connection.cursor() as cursor:
            cursor.executemany(sql, params)


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
    model = type(objs[0])
    if keys and not connection.features.can_return_rows_from_bulk_insert:
        model.objects.bulk_create(objs, batch_size=INSERT_CHUNK)
        return
    meta = model._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    head = "INSERT INTO {} ({}) VALUES ".format(
        _quote(meta.db_table), ", ".join(_quote(f.column) for f in fields)
    )
    row = f"({_placeholders(len(fields))})"
    tail = ""
    if conflict:
        unique = ", ".join(_quote(meta.get_field(n).column) for n in conflict)
        sets = ", ".join(
            f"{c} = EXCLUDED.{c}" for c in (_quote(meta.get_field(n).column) for n in refresh)
        )
        tail = f" ON CONFLICT ({unique}) DO UPDATE SET {sets}"
    params = [
        [f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields] for obj in objs
    ]
    with connection.cursor() as cursor:
        if not keys:
            cursor.executemany(head + row + tail, params)
            return
        returning = f" RETURNING {_quote(meta.pk.column)}"
        for start in range(0, len(objs), INSERT_CHUNK):
            chunk = params[start : start + INSERT_CHUNK]
            sql = head + ", ".join([row] * len(chunk)) + tail + returning
            cursor.execute(sql, [value for values in chunk for value in values])
            for obj, (pk,) in zip(
                objs[start : start + INSERT_CHUNK], cursor.fetchall(), strict=True
            ):
                obj.pk = pk
                obj._state.adding, obj._state.db = False, connection.alias


def execute(sql: str, params: Sequence[Any]) -> int:
    """A statement of the caller's own (tables and columns quoted by ``table``/``column``);
    the number of rows it changed."""
    with connection.cursor() as cursor:
        cursor.execute(sql, list(params))
        return cursor.rowcount


def table(model: type[models.Model]) -> str:
    return _quote(model._meta.db_table)


def column(model: type[models.Model], name: str) -> str:
    return _quote(model._meta.get_field(name).column)
