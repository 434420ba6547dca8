"""PostgreSQL's refusal of a change to a locked toggle names the command to run as the
README and the model's own refusal do: `bin/manage toggle unlock <key> --reason ...`
(migration 0007 said `manage.py toggle unlock`, with no key). The trigger function is
0007's, with only its message changed; going back restores 0007's."""

from importlib import import_module

from django.db import migrations

PREVIOUS = import_module("controlplane.migrations.0007_locked_toggle_and_truncate_guards")
PREVIOUS_FUNCTION = PREVIOUS.POSTGRES_FORWARDS[1]
PREVIOUS_MESSAGE = """'feature toggle % is locked: % refused (manage.py toggle unlock)',
            OLD.key, TG_OP"""
MESSAGE = """'feature toggle % is locked: % refused (bin/manage toggle unlock % --reason ...)',
            OLD.key, TG_OP, OLD.key"""
assert PREVIOUS_MESSAGE in PREVIOUS_FUNCTION, "migration 0007's function is not as expected"
FUNCTION = PREVIOUS_FUNCTION.replace(PREVIOUS_MESSAGE, MESSAGE)


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FUNCTION, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PREVIOUS_FUNCTION, params=None)


class Migration(migrations.Migration):
    dependencies = [("controlplane", "0013_discord_bot_channels_i14discord")]
    operations = [migrations.RunPython(forwards, backwards)]
