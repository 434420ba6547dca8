"""Seed a route for transcriptions to the offline model, so `/v1/audio/transcriptions`
answers out of the box with no key (`X-Operation: transcribe`), and its kill switch."""

from django.db import migrations

OPERATION = "transcribe"
TOGGLE = f"operation.{OPERATION}.enabled"


def seed(apps, schema_editor):
    AIModel = apps.get_model("routing", "AIModel")
    Policy = apps.get_model("routing", "Policy")
    Route = apps.get_model("routing", "Route")
    FeatureToggle = apps.get_model("controlplane", "FeatureToggle")
    offline = AIModel.objects.filter(model_id="offline/echo", provider__kind="offline").first()
    if offline is not None:
        Route.objects.get_or_create(
            operation=OPERATION,
            defaults={
                "description": "Transcriptions of audio (/v1/audio/transcriptions).",
                "primary_model": offline,
                "policy": Policy.objects.filter(mode="normal").first(),
            },
        )
    FeatureToggle.objects.get_or_create(
        key=TOGGLE,
        defaults={"enabled": True, "description": "Kill switch for transcriptions."},
    )


class Migration(migrations.Migration):
    dependencies = [
        ("routing", "0016_provider_kind_deepgram"),
        ("controlplane", "0003_append_only_triggers"),
    ]
    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
