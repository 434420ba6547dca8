"""Transactions for transient state, whose commit need not wait for the disk.

A budget reservation is a hold that lives only as long as the AI call it guards
(seconds): it must be visible to every concurrent call at once, but it need not
survive a crash of the machine, which ends the call as well. Money and history (the
settlement, the cost log) are committed normally, waiting for the disk.

- PostgreSQL: `SET LOCAL synchronous_commit = off` for this transaction only. A
  database crash may lose the last such commits (never corrupts anything); every
  later normal commit waits for them to reach the disk first.
- SQLite (WAL): the connection's `synchronous` is NORMAL for this transaction (it
  can only change outside one) and set back afterwards; the next normal commit
  writes the earlier ones to the disk with its own.

Inside a caller's transaction this is a plain savepoint: the caller's commit decides.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import DEFAULT_DB_ALIAS, connections, transaction


@contextmanager
def transient(using: str = DEFAULT_DB_ALIAS) -> Iterator[None]:
    connection = connections[using]
    if connection.in_atomic_block:
        with transaction.atomic(using):
            yield
        return
    if connection.vendor == "postgresql":
        with transaction.atomic(using):
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit = off")
            yield
        return
    if connection.vendor != "sqlite":
        with transaction.atomic(using):
            yield
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA synchronous")
        (level,) = cursor.fetchone()
        cursor.execute("PRAGMA synchronous = NORMAL")
    try:
        with transaction.atomic(using):
            yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA synchronous = {int(level)}")
