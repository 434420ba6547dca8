"""The auto-heal toggle (off until an Owner turns it on) and a default rule."""

from django.db import migrations


def seed(apps, schema_editor):
    FeatureToggle = apps.get_model("controlplane", "FeatureToggle")
    AutoHealRule = apps.get_model("selfheal", "AutoHealRule")
    FeatureToggle.objects.get_or_create(
        key="autoheal.enabled",
        defaults={
            "enabled": False,
            "description": "Let auto-heal rules run playbooks without a person. Off: rules are only evaluated.",
        },
    )
    AutoHealRule.objects.get_or_create(
        name="Repair a stuck queue",
        defaults={
            "finding": "task_queue",
            "severity": "critical",
            "playbook": "repair",
            "cooldown_minutes": 30,
            "target_cooldown_minutes": 60,
            "max_runs_per_hour": 2,
        },
    )


class Migration(migrations.Migration):
    dependencies = [("selfheal", "0001_initial"), ("controlplane", "0003_append_only_triggers")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
