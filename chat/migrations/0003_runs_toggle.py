"""The kill switch for agent runs, on by default."""

from django.db import migrations

KEY = "chat.runs.enabled"


def seed(apps, schema_editor):
    FeatureToggle = apps.get_model("controlplane", "FeatureToggle")
    FeatureToggle.objects.get_or_create(
        key=KEY,
        defaults={
            "enabled": True,
            "description": "Let agent runs start and continue. Off: every run stops at its "
            "next step with stop reason toggle_off.",
        },
    )


class Migration(migrations.Migration):
    dependencies = [("chat", "0002_run_budgets"), ("controlplane", "0003_append_only_triggers")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
