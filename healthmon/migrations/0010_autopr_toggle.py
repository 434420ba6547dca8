"""The toggle of code health's pull requests for mechanical fixes, off until an Owner
turns it on."""

from django.db import migrations

KEY = "codehealth.autopr.enabled"


def seed(apps, schema_editor):
    FeatureToggle = apps.get_model("controlplane", "FeatureToggle")
    FeatureToggle.objects.get_or_create(
        key=KEY,
        defaults={
            "enabled": False,
            "description": "Let code health propose pull requests for mechanical fixes (ruff's "
            "safe fixes and formatting), each pushed only after an Operator approves it. "
            "Off: nothing is proposed or pushed.",
        },
    )


class Migration(migrations.Migration):
    dependencies = [
        ("healthmon", "0009_code_scan_score_and_start_permission"),
        ("controlplane", "0007_locked_toggle_and_truncate_guards"),
    ]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
