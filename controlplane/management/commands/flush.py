"""Django's `flush`, which empties every table: the audit trail and the cost log
included, which the database itself keeps append-only (TRUNCATE, DELETE and UPDATE
refused by triggers, controlplane migration 0007 and routing migration 0009).

So flush is refused unless the settings say that history may be erased
(`FLUSH_ERASES_HISTORY`, on in the test settings only: transactional tests flush the
database after each test). Then the guards that would refuse flush's own statements
are lifted inside flush's transaction and are back when it ends, committed or rolled
back: PostgreSQL disables its TRUNCATE triggers (which only the tables' owner may do,
so an application role that does not own them cannot flush: see README), SQLite drops
its DELETE triggers and creates them again from their stored definitions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError
from django.core.management.commands import flush
from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper


class Command(flush.Command):
    help = (
        flush.Command.help
        + " The audit trail and the cost log are append-only: refused unless the settings"
        " allow it (FLUSH_ERASES_HISTORY, the test settings' own)."
    )

    def handle(self, **options: Any) -> None:
        if not settings.FLUSH_ERASES_HISTORY:
            raise CommandError(
                "flush would erase the audit trail and the cost log, which are append-only. "
                "Refused: FLUSH_ERASES_HISTORY is off (only the test settings turn it on)."
            )
        connection = connections[options["database"]]
        with transaction.atomic(using=connection.alias):
            restore_guards = _lift_history_guards(connection)
            super().handle(**options)
            restore_guards()


def _lift_history_guards(connection: BaseDatabaseWrapper) -> Callable[[], None]:
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Flush truncates; row triggers do not fire on TRUNCATE.
            cursor.execute(
                "SELECT c.relname, t.tgname FROM pg_trigger t"
                " JOIN pg_class c ON c.oid = t.tgrelid"
                " WHERE NOT t.tgisinternal AND t.tgname LIKE %s"
                " ESCAPE '\\' AND pg_table_is_visible(c.oid)",
                ["%\\_refuses\\_truncate"],
            )
            triggers = cursor.fetchall()
            for table, trigger in triggers:
                cursor.execute(f"ALTER TABLE {quote(table)} DISABLE TRIGGER {quote(trigger)}")

            def restore() -> None:
                with connection.cursor() as cursor:
                    for table, trigger in triggers:
                        cursor.execute(
                            f"ALTER TABLE {quote(table)} ENABLE TRIGGER {quote(trigger)}"
                        )

            return restore
        if connection.vendor == "sqlite":
            # Flush deletes every row.
            cursor.execute(
                "SELECT name, sql FROM sqlite_master"
                " WHERE type = 'trigger' AND name LIKE %s ESCAPE '\\'",
                ["%\\_append\\_only\\_delete"],
            )
            definitions = cursor.fetchall()
            for trigger, _ in definitions:
                cursor.execute(f"DROP TRIGGER {quote(trigger)}")

            def restore() -> None:
                with connection.cursor() as cursor:
                    for _, sql in definitions:
                        cursor.execute(sql)

            return restore
    return lambda: None
