"""On PostgreSQL, refuse UPDATE and DELETE of the cost log at the database itself
(the function comes from controlplane's migration 0003)."""

from django.db import migrations

TRIGGER = """
CREATE TRIGGER routing_operationlog_append_only
BEFORE UPDATE OR DELETE ON routing_operationlog
FOR EACH ROW EXECUTE FUNCTION controlplane_refuse_change();
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(TRIGGER, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "DROP TRIGGER IF EXISTS routing_operationlog_append_only ON routing_operationlog",
            params=None,
        )


class Migration(migrations.Migration):
    dependencies = [("routing", "0002_seed_catalog_policies_routes")]
    operations = [migrations.RunPython(forwards, backwards)]
