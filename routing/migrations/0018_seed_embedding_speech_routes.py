"""Routes for the gateway's embeddings and speech operations (the operation each
endpoint uses when no `X-Operation` is sent), to the offline model, so both answer
with no network and no configuration; a database seeded before them gets them here.
The seed is idempotent: what exists is left as it is."""

from importlib import import_module

from django.db import migrations

SEED = import_module("routing.migrations.0002_seed_catalog_policies_routes")


class Migration(migrations.Migration):
    dependencies = [("routing", "0017_transcription_route")]
    operations = [migrations.RunPython(SEED.seed, migrations.RunPython.noop)]
