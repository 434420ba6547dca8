"""Per-mode run budgets, from the routing policies of the same mode."""

from decimal import Decimal

from django.db import migrations


def seed(apps, schema_editor):
    Policy = apps.get_model("routing", "Policy")
    RunBudget = apps.get_model("chat", "RunBudget")
    for policy in Policy.objects.all():
        RunBudget.objects.get_or_create(
            mode=policy.mode,
            defaults={
                "max_steps": policy.max_iterations,
                "max_wall_clock_seconds": policy.max_wall_clock_seconds,
                "max_cost": policy.max_cost_per_run or Decimal("0.50"),
                "max_retries_per_fingerprint": 3,
            },
        )


class Migration(migrations.Migration):
    dependencies = [("chat", "0001_initial"), ("routing", "0002_seed_catalog_policies_routes")]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
