"""Writing the same fields of many rows at once."""

from __future__ import annotations

from typing import Any

from hivemind_web.hub.services import statements


def set_fields(objs: list[Any], fields: list[str]) -> None:
    """Write ``fields`` of each object, one prepared UPDATE executed for all of them.

    Django's bulk_update builds a CASE expression per row and field, which costs more
    than the rows; the driver's executemany runs one statement text many times.
    """
    model = type(objs[0])
    meta = model._meta
    attnames = [meta.get_field(name).attname for name in fields]
    rows = [[getattr(obj, a) for a in attnames] + [obj.pk] for obj in objs]
    statements.update(model, (meta.pk.name,), fields, rows)
