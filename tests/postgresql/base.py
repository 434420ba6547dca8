"""Django's PostgreSQL backend, whose flush empties only the tables that hold rows.

Each transactional test ends with Django's `flush`, which on PostgreSQL is one
`TRUNCATE` of every table (65 of them). PostgreSQL truncates a table by giving it, its
indexes and its TOAST table new files, whether it held a row or not: about 28 ms a
table on the CI machine, 1 to 4 s a flush, a third of the PostgreSQL run. After a test
only a few tables hold rows, and a `DELETE` of a few rows touches no file. So the
flush here empties the tables that hold rows: with `DELETE`, or with `TRUNCATE ...
CASCADE` for a table with triggers of its own (the append-only tables refuse
`DELETE`, and a trigger on `DELETE` should not run for a flush). Every table ends
empty, as Django's flush leaves it; the foreign keys are checked at the commit
(Django's are deferred), when no row is left to break one. Sequences are left as they
are, as the test flush asks (`reset_sequences=False`); a flush that wants them
restarted gets Django's own `TRUNCATE` of every table. See README.md here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db.backends.postgresql import base, operations


class DatabaseOperations(operations.DatabaseOperations):
    def sql_flush(
        self,
        style: Any,
        tables: Sequence[str],
        *,
        reset_sequences: bool = False,
        allow_cascade: bool = False,
    ) -> list[str]:
        if reset_sequences or not tables:
            return super().sql_flush(
                style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade
            )
        holding = self.tables_holding_rows(tables)
        with_triggers = set(self.tables_with_triggers(holding))
        deletes = [
            f"{style.SQL_KEYWORD('DELETE FROM')} {style.SQL_FIELD(self.quote_name(table))};"
            for table in holding
            if table not in with_triggers
        ]
        truncate = [table for table in holding if table in with_triggers]
        return deletes + super().sql_flush(style, truncate, allow_cascade=True)

    def tables_holding_rows(self, tables: Sequence[str]) -> list[str]:
        """Those of `tables` with at least one row, in one query."""
        # Table names from Django's introspection, quoted.
        probes = " UNION ALL ".join(
            f"SELECT %s WHERE EXISTS (SELECT 1 FROM {self.quote_name(table)})"  # noqa: S608
            for table in tables
        )
        with self.connection.cursor() as cursor:
            cursor.execute(probes, list(tables))
            return [table for (table,) in cursor.fetchall()]

    def tables_with_triggers(self, tables: list[str]) -> list[str]:
        """Those of `tables` with a trigger of their own (not a foreign key's)."""
        if not tables:
            return []
        with self.connection.cursor() as cursor:
            cursor.execute(
                "SELECT DISTINCT c.relname FROM pg_trigger t"
                " JOIN pg_class c ON c.oid = t.tgrelid"
                " WHERE NOT t.tgisinternal AND pg_table_is_visible(c.oid)"
                " AND c.relname = ANY(%s)",
                [tables],
            )
            return [table for (table,) in cursor.fetchall()]


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations
