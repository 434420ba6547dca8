"""`manage.py dumpdata` writes secrets as their ciphertext, never in the clear, and
`loaddata` reads them back with the same keys."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.serializers.base import DeserializationError

from controlplane.models import Integration, NotificationChannel

TOKEN = "rw-dumped-secret-token-3141"
WEBHOOK = "https://hooks.example.com/services/dumped-webhook-secret"


@pytest.fixture
def secrets(db: Any) -> Integration:
    NotificationChannel.objects.create(name="ops", kind="slack", target=WEBHOOK)
    integration = Integration(kind=Integration.Kind.RAILWAY, name="railway")
    integration.set_secrets({"token": TOKEN})
    integration.save()
    return integration


def _dump() -> str:
    out = StringIO()
    call_command(
        "dumpdata", "controlplane.integration", "controlplane.notificationchannel", stdout=out
    )
    return out.getvalue()


@pytest.mark.django_db
def test_a_dump_holds_no_secret(secrets):
    dump = _dump()
    assert "dumped-secret-token" not in dump
    assert "dumped-webhook-secret" not in dump
    rows = {row["model"]: row["fields"] for row in json.loads(dump)}
    assert rows["controlplane.integration"]["credentials"].startswith("fernet:")


@pytest.mark.django_db
def test_a_dump_loads_back_with_its_secrets(secrets, tmp_path: Path):
    fixture = tmp_path / "secrets.json"
    fixture.write_text(_dump())
    Integration.objects.all().delete()
    NotificationChannel.objects.all().delete()
    call_command("loaddata", str(fixture), stdout=StringIO())
    assert Integration.objects.get(name="railway").secrets == {"token": TOKEN}
    assert NotificationChannel.objects.get(name="ops").target == WEBHOOK


@pytest.mark.django_db
def test_a_dump_made_with_other_keys_is_refused_with_a_clear_error(secrets, tmp_path, settings):
    fixture = tmp_path / "secrets.json"
    fixture.write_text(_dump())
    Integration.objects.all().delete()
    NotificationChannel.objects.all().delete()
    settings.ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(DeserializationError, match="could not be decrypted"):
        call_command("loaddata", str(fixture), stdout=StringIO())
    assert not Integration.objects.exists()
