"""Create the three staff tiers and the toggles the core relies on.

The groups' permissions are set (and kept in line with the code after every
migrate) by `controlplane.tiers.sync_tier_permissions`.
"""

from django.db import migrations

TIERS = ["Observer", "Operator", "Owner"]
TOGGLES = [
    {
        "key": "notifications.enabled",
        "enabled": True,
        "critical": True,
        "description": "Send notifications (budget thresholds, anomalies, alerts). Critical: must stay on.",
    },
]


def create(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    FeatureToggle = apps.get_model("controlplane", "FeatureToggle")
    for name in TIERS:
        Group.objects.get_or_create(name=name)
    for toggle in TOGGLES:
        FeatureToggle.objects.get_or_create(key=toggle["key"], defaults=toggle)


def remove(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=TIERS).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("controlplane", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]
    operations = [migrations.RunPython(create, remove)]
