"""Inserting rows on a hot path: the INSERT statement of a model is built once.

The ORM builds and compiles its SQL anew for every `create()`: on this project's
machines about half a millisecond of Python per row, which on the path of an AI call
(the gateway's reservation and its log row) costs more than the statement itself.
`insert()` writes the same row: each field's value comes from the field itself
(`pre_save` for `auto_now_add`, `get_db_prep_save` for the backend's types, JSON,
decimals, foreign keys), so what is stored is what `save()` would have stored; only
the statement is reused. Models' `save()` methods and signals do not run: for rows
whose model adds nothing there (append-only logs, ledger rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Field, Model


@cache
def _statement(model: type[Model], using: str, rows: int) -> tuple[str, tuple[Field, ...]]:
    connection = connections[using]
    quote = connection.ops.quote_name
    fields = tuple(f for f in model._meta.concrete_fields if not f.primary_key)
    columns = ", ".join(quote(str(f.column)) for f in fields)
    one_row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    values = ", ".join([one_row] * rows)
    pk_field = model._meta.pk
    assert pk_field is not None
    pk = quote(str(pk_field.column))
    table = quote(model._meta.db_table)
    # Names from the model's own metadata, values as parameters.
    return f"INSERT INTO {table} ({columns}) VALUES {values} RETURNING {pk}", fields  # noqa: S608


def insert(instances: Sequence[Model], using: str = DEFAULT_DB_ALIAS) -> None:
    """Insert new `instances` of one model with one statement; sets their pks."""
    if not instances:
        return
    model = type(instances[0])
    connection = connections[using]
    if not connection.features.can_return_rows_from_bulk_insert:
        for instance in instances:  # a backend without RETURNING: the ORM, row by row
            instance.save(force_insert=True, using=using)
        return
    sql, fields = _statement(model, using, len(instances))
    params = [
        field.get_db_prep_save(field.pre_save(instance, add=True), connection)
        for instance in instances
        for field in fields
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        pks = [row[0] for row in cursor.fetchall()]
    for instance, pk in zip(instances, pks, strict=True):
        instance.pk = pk
        instance._state.adding = False
        instance._state.db = using
