"""Who asked a run to stop, and its pause time, as fields of their own.

They were text and JSON: the stopper's name in `status_detail` ("Stop requested by
NAME."), `paused_at` (Unix seconds) and `paused_seconds` in `guardrails`. The data
migration carries the existing values into the new fields (and back on reverse).
"""

import re
from datetime import UTC, datetime

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models
from django.db.models import Q

STOPPER = re.compile(r"Stop requested by (.+)\.$")
PAUSE_KEYS = ("paused_at", "paused_seconds")


def carry_out_of_text(apps, schema_editor):
    Run = apps.get_model("chat", "Run")
    User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    paused = Q(guardrails__has_key="paused_at") | Q(guardrails__has_key="paused_seconds")
    for run in Run.objects.filter(paused).only("pk", "guardrails"):
        state = dict(run.guardrails)
        at = state.pop("paused_at", None)
        run.paused_at = datetime.fromtimestamp(float(at), tz=UTC) if at is not None else None
        run.paused_seconds = float(state.pop("paused_seconds", 0) or 0)
        run.guardrails = state
        run.save(update_fields=["paused_at", "paused_seconds", "guardrails"])
    for run in Run.objects.filter(stop_requested=True).only("pk", "status_detail"):
        match = STOPPER.match(run.status_detail or "")
        user = (
            User.objects.filter(**{User.USERNAME_FIELD: match.group(1)}).first() if match else None
        )
        if user is not None:
            Run.objects.filter(pk=run.pk).update(stop_requested_by=user)


def carry_back_into_text(apps, schema_editor):
    Run = apps.get_model("chat", "Run")
    for run in Run.objects.filter(Q(paused_at__isnull=False) | Q(paused_seconds__gt=0)):
        state = dict(run.guardrails or {})
        if run.paused_at is not None:
            state["paused_at"] = run.paused_at.timestamp()
        if run.paused_seconds:
            state["paused_seconds"] = run.paused_seconds
        Run.objects.filter(pk=run.pk).update(guardrails=state)


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0004_money_exact_on_sqlite"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="run",
            name="paused_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="run",
            name="paused_seconds",
            field=models.FloatField(default=0),
        ),
        migrations.AddField(
            model_name="run",
            name="stop_requested_by",
            field=models.ForeignKey(
                blank=True,
                help_text="Who asked a working run to stop (it stops at its next poll).",
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.RunPython(carry_out_of_text, carry_back_into_text),
    ]
