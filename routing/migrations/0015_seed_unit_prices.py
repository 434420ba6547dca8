"""Give the seeded models the unit prices the seed now lists (gpt-4o's per-image price,
and `vision` for a model reading images), so a database seeded by 0002, which ran
before these columns existed, matches `sync_models --seed`. Only models still as the
seed made them (source "seed") and only prices still unknown are filled."""

import json
from decimal import Decimal
from pathlib import Path

from django.db import migrations

SEED = Path(__file__).resolve().parent.parent / "seed_catalog.json"
UNIT_PRICE_KEYS = {"image": "price_image"}


def fill_unit_prices(apps, schema_editor):
    AIModel = apps.get_model("routing", "AIModel")
    for row in json.loads(SEED.read_text())["models"]:
        model = AIModel.objects.filter(
            provider__name=row["provider"], model_id=row["model_id"], source="seed"
        ).first()
        if model is None:
            continue
        changed = False
        for key, field in UNIT_PRICE_KEYS.items():
            if key in row["prices"] and getattr(model, field) is None:
                setattr(model, field, Decimal(row["prices"][key]))
                changed = True
        inputs = (row.get("architecture") or {}).get("input_modalities") or []
        if "image" in inputs and "vision" not in model.capabilities:
            model.capabilities = sorted([*model.capabilities, "vision"])
            changed = True
        if changed:
            model.save()


class Migration(migrations.Migration):
    dependencies = [("routing", "0014_route_api")]
    operations = [migrations.RunPython(fill_unit_prices, migrations.RunPython.noop)]
