"""Statements that write a whole batch's rows at once, for ingest's counters, minutes
and samples: one statement per table and batch instead of one per row.

On PostgreSQL the rows go as one array per column (`unnest`), so the statement's text
is the same whatever the number of rows: psycopg binds it on the server
(`controlplane.runtime.prepared`), parses it once and the server plans it once per
connection. A VALUES list of a placeholder per value, different for every batch size,
cost more to parse on the client (psycopg splits the query text at each placeholder)
than the server took to run it: 35 ms of a 110 ms batch of 500 records in
`bench_ingest`'s mix. SQLite gets a VALUES list.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
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
    if connection.vendor == "postgresql":
        fields = {field.column: field for field in model._meta.concrete_fields}
        arrays = ", ".join(f"%s::{fields[name].db_type(connection)}[]" for name in columns)
        columns_of_rows = [list(column) for column in zip(*rows, strict=True)]
        return f"SELECT * FROM unnest({arrays})", columns_of_rows  # noqa: S608 (types of the model)
    row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    return "VALUES " + ", ".join([row] * len(rows)), [value for row in rows for value in row]


def _cursor() -> AbstractContextManager[Any]:
    return server_bound_cursor() if connection.vendor == "postgresql" else connection.cursor()
