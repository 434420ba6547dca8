"""PostgreSQL statements planned once per connection instead of once per run.

psycopg prepares a statement a connection runs often (`prepare_threshold`, 5 by
default; None turns it off, as a transaction-pooling PgBouncer needs), but only one
sent with its parameters apart from the statement (server-side binding). Django's
cursors bind on the client, so they are never prepared. The budget reservation and
the settlement of every AI call go through `server_bound_cursor()`: their planning
took longer than running them. The settings add `plan_cache_mode=force_generic_plan`,
so a prepared statement is not planned again for each set of parameters.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from django.db import connection


@contextmanager
def server_bound_cursor() -> Iterator[Any]:
    """A cursor of the default database (PostgreSQL) that binds its parameters on the
    server, wrapped by Django as its own cursors are (query logging, error
    translation)."""
    connection.ensure_connection()
    raw = psycopg.Cursor(connection.connection)
    with connection._prepare_cursor(raw) as cursor:  # type: ignore[attr-defined]
        yield cursor
