"""The cost log refuses TRUNCATE on PostgreSQL (row triggers do not fire on it), and
UPDATE and DELETE on SQLite, as the audit trail does (controlplane's migration 0007)."""

from django.db import migrations

POSTGRES_FORWARDS = [
    """
    CREATE TRIGGER routing_operationlog_refuses_truncate
    BEFORE TRUNCATE ON routing_operationlog
    FOR EACH STATEMENT EXECUTE FUNCTION controlplane_refuse_change();
    """,
]
POSTGRES_BACKWARDS = [
    "DROP TRIGGER IF EXISTS routing_operationlog_refuses_truncate ON routing_operationlog",
]
SQLITE_FORWARDS = [
    f"""
    CREATE TRIGGER routing_operationlog_append_only_{operation.lower()}
    BEFORE {operation} ON routing_operationlog
    BEGIN
        SELECT RAISE(ABORT, 'routing_operationlog is append-only: {operation} refused');
    END;
    """
    for operation in ("UPDATE", "DELETE")
]
SQLITE_BACKWARDS = [
    "DROP TRIGGER IF EXISTS routing_operationlog_append_only_update",
    "DROP TRIGGER IF EXISTS routing_operationlog_append_only_delete",
]


def forwards(apps, schema_editor):
    statements = {"postgresql": POSTGRES_FORWARDS, "sqlite": SQLITE_FORWARDS}
    for sql in statements.get(schema_editor.connection.vendor, []):
        schema_editor.execute(sql, params=None)


def backwards(apps, schema_editor):
    statements = {"postgresql": POSTGRES_BACKWARDS, "sqlite": SQLITE_BACKWARDS}
    for sql in statements.get(schema_editor.connection.vendor, []):
        schema_editor.execute(sql, params=None)


class Migration(migrations.Migration):
    dependencies = [
        ("routing", "0008_operation_log_usage_flag"),
        ("controlplane", "0007_locked_toggle_and_truncate_guards"),
    ]
    operations = [migrations.RunPython(forwards, backwards)]
