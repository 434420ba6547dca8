"""On PostgreSQL, refuse UPDATE and DELETE of the audit trail at the database itself."""

from django.db import migrations

FUNCTION = """
CREATE OR REPLACE FUNCTION controlplane_refuse_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
"""
TRIGGER = """
CREATE TRIGGER controlplane_auditevent_append_only
BEFORE UPDATE OR DELETE ON controlplane_auditevent
FOR EACH ROW EXECUTE FUNCTION controlplane_refuse_change();
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FUNCTION, params=None)
        schema_editor.execute(TRIGGER, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "DROP TRIGGER IF EXISTS controlplane_auditevent_append_only ON controlplane_auditevent"
        )


class Migration(migrations.Migration):
    dependencies = [("controlplane", "0002_tiers_and_toggles")]
    operations = [migrations.RunPython(forwards, backwards)]
