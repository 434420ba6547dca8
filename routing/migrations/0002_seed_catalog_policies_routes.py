"""Seed the offline catalog, the four mode policies, the default routes and the
routing toggles, so the app routes calls with no network and no configuration."""

import json
from decimal import Decimal
from pathlib import Path

from django.db import migrations

SEED = Path(__file__).resolve().parent.parent / "seed_catalog.json"
PRICE_KEYS = {
    "prompt": "price_prompt",
    "completion": "price_completion",
    "input_cache_read": "price_cache_read",
    "input_cache_write": "price_cache_write",
    "internal_reasoning": "price_reasoning",
    "request": "price_request",
}
TOGGLES = [
    ("gateway.enabled", True, "Kill switch for the whole /v1/ gateway."),
    ("routing.budgets.enforced", True, "Refuse calls that would pass a daily budget. Critical."),
    ("operation.chat.enabled", True, "Kill switch for the chat operation."),
    ("operation.agent.enabled", True, "Kill switch for agent runs."),
    ("operation.summarize.enabled", True, "Kill switch for the summarize operation."),
]


def seed(apps, schema_editor):
    Provider = apps.get_model("routing", "Provider")
    AIModel = apps.get_model("routing", "AIModel")
    Policy = apps.get_model("routing", "Policy")
    Route = apps.get_model("routing", "Route")
    FeatureToggle = apps.get_model("controlplane", "FeatureToggle")
    data = json.loads(SEED.read_text())
    providers = {}
    for row in data["providers"]:
        providers[row["name"]], _ = Provider.objects.get_or_create(
            name=row["name"],
            defaults={"kind": row["kind"], "base_url": row["base_url"], "enabled": row["enabled"]},
        )
    models = {}
    for row in data["models"]:
        # Unit prices the seed gained later (e.g. `image`) have no column yet at this
        # point of the schema: `sync_models --seed` sets them.
        prices = {PRICE_KEYS[k]: Decimal(v) for k, v in row["prices"].items() if k in PRICE_KEYS}
        models[row["model_id"]], _ = AIModel.objects.get_or_create(
            provider=providers[row["provider"]],
            model_id=row["model_id"],
            defaults={
                "name": row["name"],
                "context_length": row["context_length"],
                "supports_tools": row["supports_tools"],
                "capabilities": ["tools"] if row["supports_tools"] else [],
                "source": "seed",
                **prices,
            },
        )
    policies = {}
    for row in data["policies"]:
        policies[row["mode"]], _ = Policy.objects.get_or_create(
            mode=row["mode"],
            defaults={
                "description": row["description"],
                "max_price_per_1k": Decimal(row["max_price_per_1k"]),
                "max_context": row["max_context"],
                "max_iterations": row["max_iterations"],
                "max_cost_per_run": Decimal(row["max_cost_per_run"]),
                "max_wall_clock_seconds": row["max_wall_clock_seconds"],
            },
        )
    for row in data["routes"]:
        Route.objects.get_or_create(
            operation=row["operation"],
            defaults={
                "description": row["description"],
                "primary_model": models[row["primary"]],
                "policy": policies[row["policy"]],
            },
        )
    for key, enabled, description in TOGGLES:
        FeatureToggle.objects.get_or_create(
            key=key,
            defaults={
                "enabled": enabled,
                "description": description,
                "critical": key == "routing.budgets.enforced",
            },
        )


class Migration(migrations.Migration):
    dependencies = [
        ("routing", "0001_initial"),
        ("controlplane", "0003_append_only_triggers"),
    ]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
