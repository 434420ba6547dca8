"""Statements that write a whole batch's rows at once, for ingest's counters, minutes
and samples: one statement per table and batch instead of one per row.

Rows are given as tuples of Python values in the order of the named columns (dates
as datetimes, a JSONField's value as the dict or list itself). On PostgreSQL they go
as one JSON array parameter (`jsonb_array_elements`, each value cast to its column's
type), so the statement's text is the same whatever the number of rows: psycopg binds
it on the server (`controlplane.runtime.prepared`), parses it once, and the server
plans it once per connection. Measured on a batch of 500 mixed LogHub records
(`bench_ingest`): a VALUES list of one placeholder per value cost more to parse on the
client (psycopg splits the query text at each placeholder) than the server took to
run it, 35 ms of a 110 ms batch; one array per column (`unnest`) took 5 ms of client
CPU for the samples' upsert, to dump the arrays; the JSON array 2 ms. SQLite gets a
VALUES list. Text must hold no NUL (ingest replaces them first).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from django.db import connection, models

from controlplane.runtime.prepared import server_bound_cursor

Row = tuple[Any, ...]


def upsert_adding(
    model: type[models.Model], keys: Sequence[str], rows: list[Row], added: Sequence[str]
) -> None:
    """Insert rows (`keys` then `added` columns), or add their `added` numbers to the
    row already there. No two rows may share their keys."""
    table = model._meta.db_table
    updates = ", ".join(f"{name} = {table}.{name} + excluded.{name}" for name in added)
    _upsert(model, keys, rows, added, updates)


def upsert_replacing(
    model: type[models.Model], keys: Sequence[str], rows: list[Row], replaced: Sequence[str]
) -> None:
    """Insert rows, or replace the `replaced` columns of the row already there."""
    updates = ", ".join(f"{name} = excluded.{name}" for name in replaced)
    _upsert(model, keys, rows, replaced, updates)


def update_raising(
    model: type[models.Model], rows: list[Row], added: Sequence[str], raised: Sequence[str]
) -> None:
    """For rows of (primary key, *added, *raised): add to the `added` columns, and
    raise each `raised` column to the row's value when that is greater."""
    if not rows:
        return
    table = model._meta.db_table
    pk = str(model._meta.pk.column)
    columns = (pk, *added, *raised)
    greatest = "GREATEST" if connection.vendor == "postgresql" else "MAX"  # SQLite's scalar max
    sets = [f"{name} = {table}.{name} + batch.{name}" for name in added]
    sets += [f"{name} = {greatest}({table}.{name}, batch.{name})" for name in raised]
    source, params = _row_source(model, columns, sorted(rows))
    # Names come from the models; values go as parameters.
    sql = (
        f"WITH batch ({', '.join(columns)}) AS ({source}) "  # noqa: S608
        f"UPDATE {table} SET {', '.join(sets)} FROM batch WHERE {table}.{pk} = batch.{pk}"
    )
    with _cursor() as cursor:
        cursor.execute(sql, params)


def _upsert(
    model: type[models.Model],
    keys: Sequence[str],
    rows: list[Row],
    values: Sequence[str],
    updates: str,
) -> None:
    if not rows:
        return
    columns = (*keys, *values)
    # In key order, so that two batches lock the rows they share in the same order.
    source, params = _row_source(model, columns, sorted(rows, key=lambda row: row[: len(keys)]))
    sql = (
        f"INSERT INTO {model._meta.db_table} ({', '.join(columns)}) {source} "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
    )
    with _cursor() as cursor:
        cursor.execute(sql, params)


def _row_source(
    model: type[models.Model], columns: Sequence[str], rows: list[Row]
) -> tuple[str, list[Any]]:
    """A SELECT (PostgreSQL) or VALUES (SQLite) giving `rows`, and its parameters."""
    fields = {field.column: field for field in model._meta.concrete_fields}
    kinds = [fields[name] for name in columns]
    if connection.vendor == "postgresql":
        extracted = ", ".join(
            f"(row -> {n})" if isinstance(field, models.JSONField)
            else f"(row ->> {n})::{field.db_type(connection)}"
            for n, field in enumerate(kinds)
        )  # fmt: skip
        payload = json.dumps([_json_row(row) for row in rows], separators=(",", ":"))
        source = f"SELECT {extracted} FROM jsonb_array_elements(%s::jsonb) AS row"  # noqa: S608
        return source, [payload]
    adapt = [_sqlite_adapter(field) for field in kinds]
    flat = [convert(value) for row in rows for convert, value in zip(adapt, row, strict=True)]
    row_marks = "(" + ", ".join(["%s"] * len(columns)) + ")"
    return "VALUES " + ", ".join([row_marks] * len(rows)), flat


def _json_row(row: Row) -> list[Any]:
    return [value.isoformat() if isinstance(value, datetime) else value for value in row]


def _sqlite_adapter(field: models.Field[Any, Any]) -> Any:
    if isinstance(field, models.JSONField):
        return json.dumps  # as the model's JSONField stores it
    if isinstance(field, models.DateTimeField):
        return connection.ops.adapt_datetimefield_value
    return lambda value: value


def _cursor() -> AbstractContextManager[Any]:
    return server_bound_cursor() if connection.vendor == "postgresql" else connection.cursor()
