"""Append-only tables are guarded below the ORM: TRUNCATE on PostgreSQL, UPDATE and
DELETE on SQLite (PostgreSQL's UPDATE and DELETE triggers: test_audit.py), and
`manage.py flush` erases them only where the settings allow it (the test settings)."""

from __future__ import annotations

from typing import Any

import pytest
from django.apps import apps
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from controlplane.audit import record
from controlplane.models import AppendOnlyModel, AuditEvent
from routing.models import OperationLog

on_sqlite = pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's triggers")


def append_only_tables() -> list[str]:
    return sorted(
        model._meta.db_table
        for model in apps.get_models()
        if issubclass(model, AppendOnlyModel) and not model._meta.proxy
    )


def triggers_of(table: str) -> set[str]:
    """The operations each guard trigger of `table` fires on, as "UPDATE", "DELETE",
    "TRUNCATE"."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # tgtype's bits: 8 DELETE, 16 UPDATE, 32 TRUNCATE.
            cursor.execute(
                "SELECT t.tgtype FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
                " WHERE c.relname = %s AND NOT t.tgisinternal AND t.tgenabled <> 'D'",
                [table],
            )
            bits = {"DELETE": 8, "UPDATE": 16, "TRUNCATE": 32}
            fired = [tgtype for (tgtype,) in cursor.fetchall()]
            return {op for tgtype in fired for op, bit in bits.items() if tgtype & bit}
        cursor.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s", [table]
        )
        definitions = [sql for (sql,) in cursor.fetchall()]
        return {op for sql in definitions for op in ("UPDATE", "DELETE") if f"BEFORE {op}" in sql}


def truncate(table: str, cascade: bool = False) -> None:
    # The rows' foreign keys are checked first: PostgreSQL does not truncate a table
    # with checks still pending in the transaction.
    connection.check_constraints()
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {table}{' CASCADE' if cascade else ''}")


def log_row() -> OperationLog:
    return OperationLog.objects.create(
        request_id="req-1", operation="chat", cost_source="none", status="refused"
    )


@pytest.mark.django_db
def test_the_append_only_tables_are_the_audit_trail_and_the_cost_log():
    # A new append-only model must get its guards too: this list says which are known.
    assert append_only_tables() == ["controlplane_auditevent", "routing_operationlog"]


@pytest.mark.django_db
@pytest.mark.parametrize("table", append_only_tables())
def test_every_append_only_table_is_guarded_below_the_orm(table):
    expected = {"postgresql": {"UPDATE", "DELETE", "TRUNCATE"}, "sqlite": {"UPDATE", "DELETE"}}
    assert triggers_of(table) >= expected[connection.vendor]


# PostgreSQL: TRUNCATE (row triggers do not fire on it).


@pytest.mark.postgres
@pytest.mark.django_db
@pytest.mark.parametrize("table", append_only_tables())
def test_the_database_refuses_to_truncate_an_append_only_table(table):
    record("test.something", after={"n": 1})
    log_row()
    with (
        pytest.raises(DatabaseError, match=f"{table} is append-only: TRUNCATE refused"),
        transaction.atomic(),
    ):
        truncate(table)
    assert AuditEvent.objects.count() == 1
    assert OperationLog.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db
def test_truncating_a_table_that_cascades_into_the_audit_trail_is_refused(owner):
    record("test.something", actor=owner)
    with (
        pytest.raises(DatabaseError, match="controlplane_auditevent is append-only"),
        transaction.atomic(),
    ):
        truncate("auth_user", cascade=True)
    assert AuditEvent.objects.filter(actor=owner).count() == 1


# SQLite: UPDATE and DELETE, as PostgreSQL's row triggers refuse them.


@on_sqlite
@pytest.mark.django_db
@pytest.mark.parametrize(
    ("statement", "operation"),
    [
        ("UPDATE controlplane_auditevent SET action = 'test.rewritten'", "UPDATE"),
        ("DELETE FROM controlplane_auditevent", "DELETE"),
        ("UPDATE routing_operationlog SET cost = '0'", "UPDATE"),
        ("DELETE FROM routing_operationlog", "DELETE"),
    ],
)
def test_sqlite_refuses_raw_sql_that_rewrites_history(statement, operation):
    event = record("test.something", after={"n": 1})
    row = log_row()
    table = statement.split()[1 if operation == "UPDATE" else 2]
    with (
        pytest.raises(DatabaseError, match=f"{table} is append-only: {operation} refused"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement)
    assert AuditEvent.objects.get(pk=event.pk).action == "test.something"
    assert OperationLog.objects.filter(pk=row.pk).exists()


@on_sqlite
@pytest.mark.django_db
def test_sqlite_refuses_an_update_through_the_base_manager():
    event = record("test.something")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent._base_manager.filter(pk=event.pk).update(action="test.rewritten")
    assert AuditEvent.objects.get(pk=event.pk).action == "test.something"


# flush: the only way to empty them, in the test settings only.


def assert_still_guarded() -> None:
    statement = {
        "postgresql": "TRUNCATE controlplane_auditevent",
        "sqlite": "DELETE FROM controlplane_auditevent",
    }[connection.vendor]
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement)


@pytest.mark.django_db(transaction=True)
def test_flush_is_refused_where_the_settings_keep_history(settings: Any):
    settings.FLUSH_ERASES_HISTORY = False
    event = record("test.something")
    with pytest.raises(CommandError, match="append-only"):
        call_command("flush", interactive=False, verbosity=0)
    assert AuditEvent.objects.filter(pk=event.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_flush_in_the_test_settings_empties_history_and_leaves_the_guards_in_place():
    record("test.something")
    log_row()
    call_command("flush", interactive=False, verbosity=0)
    assert not AuditEvent.objects.exists()
    assert not OperationLog.objects.exists()
    for table in append_only_tables():
        assert triggers_of(table) >= {"UPDATE", "DELETE"}
    record("test.after-the-flush")
    assert_still_guarded()
    assert AuditEvent.objects.count() == 1
