"""Guards below the ORM, so that no path of the application rewrites history or a
locked toggle silently (raw SQL, the base manager, `Model.save` called past the
model's own checks).

PostgreSQL: the audit trail refuses TRUNCATE too (row triggers do not fire on it, so
a statement trigger does); a locked toggle refuses UPDATE, DELETE and TRUNCATE except
the one change the unlock command makes, in a transaction that says so with the
transaction-local setting `controlplane.toggle_unlock`.

SQLite: the audit trail refuses UPDATE and DELETE as PostgreSQL's trigger does (SQLite
has no TRUNCATE). A table that Django rebuilds on SQLite (an altered column) loses its
triggers: `tests/controlplane/test_history_guards.py` fails if one goes missing.

`manage.py flush` lifts these guards for its own transaction only where the settings
allow it (the test settings do): see controlplane/management/commands/flush.py.
"""

from django.db import migrations

POSTGRES_FORWARDS = [
    # controlplane_refuse_change (migration 0003) raises whatever the operation, so it
    # serves a statement trigger as it serves the row trigger.
    """
    CREATE TRIGGER controlplane_auditevent_refuses_truncate
    BEFORE TRUNCATE ON controlplane_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION controlplane_refuse_change();
    """,
    """
    CREATE OR REPLACE FUNCTION controlplane_refuse_locked_toggle_change() RETURNS trigger AS $$
    BEGIN
        IF TG_OP = 'TRUNCATE' THEN
            IF EXISTS (SELECT 1 FROM controlplane_featuretoggle WHERE locked) THEN
                RAISE EXCEPTION 'controlplane_featuretoggle holds locked toggles: TRUNCATE refused'
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
            RETURN NULL;
        END IF;
        IF NOT OLD.locked THEN
            IF TG_OP = 'DELETE' THEN
                RETURN OLD;
            END IF;
            RETURN NEW;
        END IF;
        -- The unlock command's one change: locked to false and nothing else, in a
        -- transaction that set controlplane.toggle_unlock.
        IF TG_OP = 'UPDATE'
            AND NOT NEW.locked
            AND current_setting('controlplane.toggle_unlock', true) = 'on'
            AND (NEW.id, NEW.key, NEW.enabled, NEW.critical, NEW.description)
                IS NOT DISTINCT FROM (OLD.id, OLD.key, OLD.enabled, OLD.critical, OLD.description)
        THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'feature toggle % is locked: % refused (manage.py toggle unlock)',
            OLD.key, TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END;
    $$ LANGUAGE plpgsql;
    """,
    """
    CREATE TRIGGER controlplane_featuretoggle_locked
    BEFORE UPDATE OR DELETE ON controlplane_featuretoggle
    FOR EACH ROW EXECUTE FUNCTION controlplane_refuse_locked_toggle_change();
    """,
    """
    CREATE TRIGGER controlplane_featuretoggle_refuses_truncate
    BEFORE TRUNCATE ON controlplane_featuretoggle
    FOR EACH STATEMENT EXECUTE FUNCTION controlplane_refuse_locked_toggle_change();
    """,
]
POSTGRES_BACKWARDS = [
    "DROP TRIGGER IF EXISTS controlplane_featuretoggle_refuses_truncate"
    " ON controlplane_featuretoggle",
    "DROP TRIGGER IF EXISTS controlplane_featuretoggle_locked ON controlplane_featuretoggle",
    "DROP FUNCTION IF EXISTS controlplane_refuse_locked_toggle_change()",
    "DROP TRIGGER IF EXISTS controlplane_auditevent_refuses_truncate ON controlplane_auditevent",
]
SQLITE_FORWARDS = [
    f"""
    CREATE TRIGGER controlplane_auditevent_append_only_{operation.lower()}
    BEFORE {operation} ON controlplane_auditevent
    BEGIN
        SELECT RAISE(ABORT, 'controlplane_auditevent is append-only: {operation} refused');
    END;
    """
    for operation in ("UPDATE", "DELETE")
]
SQLITE_BACKWARDS = [
    "DROP TRIGGER IF EXISTS controlplane_auditevent_append_only_update",
    "DROP TRIGGER IF EXISTS controlplane_auditevent_append_only_delete",
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
    dependencies = [("controlplane", "0006_approval_withdrawn")]
    operations = [migrations.RunPython(forwards, backwards)]
