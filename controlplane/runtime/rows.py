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
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Field, Model


@dataclass(frozen=True)
class Statement:
    """A model's INSERT, in parts: for `insert()`, or to embed in a larger statement."""

    table: str  # quoted
    columns: str  # quoted, comma-separated
    pk: str  # quoted
    fields: tuple[Field, ...]

    @property
    def placeholders(self) -> str:
        return "(" + ", ".join(["%s"] * len(self.fields)) + ")"

    def values(self, instance: Model, connection: Any) -> list[Any]:
        """The row's values as `save()` would store them, in column order."""
        return [
            field.get_db_prep_save(field.pre_save(instance, add=True), connection)
            for field in self.fields
        ]


@cache
def statement(model: type[Model], using: str = DEFAULT_DB_ALIAS) -> Statement:
    quote = connections[using].ops.quote_name
    fields = tuple(f for f in model._meta.concrete_fields if not f.primary_key)
    pk_field = model._meta.pk
    assert pk_field is not None
    # Names from the model's own metadata; values go as parameters.
    return Statement(
        table=quote(model._meta.db_table),
        columns=", ".join(quote(str(f.column)) for f in fields),
        pk=quote(str(pk_field.column)),
        fields=fields,
    )


@cache
def _sql(model: type[Model], using: str, rows: int) -> str:
    parts = statement(model, using)
    values = ", ".join([parts.placeholders] * rows)
    return f"INSERT INTO {parts.table} ({parts.columns}) VALUES {values} RETURNING {parts.pk}"  # noqa: S608


def saved(instance: Model, pk: Any, using: str = DEFAULT_DB_ALIAS) -> None:
    """Mark `instance` as stored with primary key `pk`, as `save()` leaves it."""
    instance.pk = pk
    instance._state.adding = False
    instance._state.db = using


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
    parts = statement(model, using)
    params = [value for instance in instances for value in parts.values(instance, connection)]
    with connection.cursor() as cursor:
        cursor.execute(_sql(model, using, len(instances)), params)
        pks = [row[0] for row in cursor.fetchall()]
    for instance, pk in zip(instances, pks, strict=True):
        saved(instance, pk, using)
