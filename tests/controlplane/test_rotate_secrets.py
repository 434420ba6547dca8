"""`manage.py rotate_secrets`: every stored secret re-encrypted with the first key,
in one transaction, idempotently, and refused whole when a value cannot be read."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from io import StringIO
from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections, models, transaction

from controlplane.audit import acting_as
from controlplane.checks import encryption_keys
from controlplane.models import AuditEvent, Integration, NotificationChannel
from controlplane.secret_rotation import encrypted_fields, rotate_secrets
from routing.models import Provider
from tests.controlplane.test_background import wait_for

OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()
FOREIGN_KEY = Fernet.generate_key().decode()
WEBHOOK = "https://discord.com/api/webhooks/42/webhook-secret-value"
API_KEY = "sk-or-v1-provider-secret-value"
TOKEN = "rw-railway-secret-value"
PLAINTEXTS = (WEBHOOK, API_KEY, TOKEN)


@pytest.fixture
def secrets_under_old_key(db: Any, settings: Any) -> dict[str, Any]:
    settings.ENCRYPTION_KEYS = [OLD_KEY]
    channel = NotificationChannel.objects.create(name="ops", kind="discord", target=WEBHOOK)
    provider = Provider.objects.create(name="openrouter-x", kind="openrouter", api_key=API_KEY)
    keyless = Provider.objects.create(name="local-ollama", kind="ollama", api_key="")
    integration = Integration(kind=Integration.Kind.RAILWAY, name="railway")
    integration.set_secrets({"token": TOKEN})
    integration.save()
    return {
        "channel": channel,
        "provider": provider,
        "keyless": keyless,
        "integration": integration,
    }


def _rotate() -> str:
    out = StringIO()
    call_command("rotate_secrets", stdout=out, stderr=StringIO())
    return out.getvalue()


def _stored() -> dict[tuple[str, Any], str]:
    """Every non-empty stored ciphertext, as the database holds it."""
    stored: dict[tuple[str, Any], str] = {}
    for model, field in encrypted_fields():
        rows = models.QuerySet(model=model).annotate(
            raw=models.functions.Cast(field.attname, output_field=models.TextField())
        )
        for pk, raw in rows.values_list("pk", "raw"):
            if raw:
                stored[(f"{model._meta.label}.{field.name}", pk)] = raw
    return stored


def _decryptable_with(key: str, stored: dict[tuple[str, Any], str]) -> bool:
    fernet = Fernet(key.encode())
    try:
        for raw in stored.values():
            fernet.decrypt(raw.encode())
    except Exception:
        return False
    return True


def _read_back(secrets: dict[str, Any]) -> tuple[str, str, dict[str, str]]:
    return (
        NotificationChannel.objects.get(pk=secrets["channel"].pk).target,
        Provider.objects.get(pk=secrets["provider"].pk).api_key,
        Integration.objects.get(pk=secrets["integration"].pk).secrets,
    )


def test_every_encrypted_field_is_found_through_the_app_registry():
    labels = {f"{model._meta.label}.{field.name}" for model, field in encrypted_fields()}
    assert {
        "controlplane.Integration.credentials",
        "controlplane.NotificationChannel.target",
        "routing.Provider.api_key",
    } <= labels


@pytest.mark.django_db
def test_with_a_new_key_first_it_re_encrypts_everything_and_the_old_key_can_go(
    secrets_under_old_key, settings
):
    before = _stored()
    assert len(before) >= 3
    settings.ENCRYPTION_KEYS = [NEW_KEY]
    with pytest.raises(ValueError, match="could not be decrypted"):
        _read_back(secrets_under_old_key)  # without the old key nothing reads yet

    settings.ENCRYPTION_KEYS = [NEW_KEY, OLD_KEY]
    output = _rotate()
    assert f"{len(before)} secrets examined, {len(before)} re-encrypted, 0 already current" in (
        output
    )
    assert "controlplane.Integration.credentials: 1 examined, 1 re-encrypted" in output
    after = _stored()
    assert after.keys() == before.keys()
    assert _decryptable_with(NEW_KEY, after)
    assert not _decryptable_with(OLD_KEY, after)

    settings.ENCRYPTION_KEYS = [NEW_KEY]
    assert _read_back(secrets_under_old_key) == (WEBHOOK, API_KEY, {"token": TOKEN})
    assert Provider.objects.get(pk=secrets_under_old_key["keyless"].pk).api_key == ""


@pytest.mark.django_db
def test_a_second_run_changes_nothing(secrets_under_old_key, settings):
    settings.ENCRYPTION_KEYS = [NEW_KEY, OLD_KEY]
    _rotate()
    first = _stored()
    output = _rotate()
    assert f"{len(first)} secrets examined, 0 re-encrypted, {len(first)} already current" in output
    assert _stored() == first
    assert AuditEvent.objects.filter(action="secrets.rotated").count() == 1


@pytest.mark.django_db
def test_with_the_current_key_alone_nothing_is_rewritten(secrets_under_old_key):
    before = _stored()
    output = _rotate()
    assert f"{len(before)} secrets examined, 0 re-encrypted" in output
    assert _stored() == before
    assert not AuditEvent.objects.filter(action="secrets.rotated").exists()


@pytest.mark.django_db
def test_one_audit_event_sums_up_the_rotation_without_any_secret(secrets_under_old_key, settings):
    changes_before = AuditEvent.objects.count()
    settings.ENCRYPTION_KEYS = [NEW_KEY, OLD_KEY]
    _rotate()
    (event,) = AuditEvent.objects.all()[: AuditEvent.objects.count() - changes_before]
    assert event.action == "secrets.rotated"
    assert event.actor is None
    assert event.actor_label == "system"
    total = len(_stored())
    assert event.after["reencrypted"] == total
    assert event.after["fields"]["controlplane.NotificationChannel.target"] == 1
    text = str(event.after) + event.object_repr
    assert not [secret for secret in PLAINTEXTS if secret in text]
    assert NEW_KEY not in text
    assert OLD_KEY not in text


@pytest.mark.django_db
def test_a_value_no_key_decrypts_stops_the_rotation_naming_it_and_changes_nothing(
    secrets_under_old_key, settings
):
    provider = secrets_under_old_key["provider"]
    foreign = Fernet(FOREIGN_KEY.encode()).encrypt(b"lost").decode()
    # Provider comes after the core's models: the rows before it were already
    # re-encrypted in the transaction when the rotation meets this one.
    models.QuerySet(model=Provider).filter(pk=provider.pk).update(
        api_key=models.Value(foreign, models.TextField())
    )
    before = _stored()
    settings.ENCRYPTION_KEYS = [NEW_KEY, OLD_KEY]
    with pytest.raises(CommandError) as refused:
        _rotate()
    assert str(refused.value) == (
        f"routing.Provider.api_key of row {provider.pk} cannot be decrypted with any key in "
        "ENCRYPTION_KEYS (was the key it was encrypted with left out?). Nothing was changed."
    )
    assert _stored() == before
    assert not AuditEvent.objects.filter(action="secrets.rotated").exists()


def test_settings_read_several_comma_separated_keys_in_order(tmp_path):
    environment = {
        **os.environ,
        "ENCRYPTION_KEYS": f" {NEW_KEY}, {OLD_KEY} ,",
        "SECRET_KEY": "x" * 50,
        "VAR_DIR": str(tmp_path),
    }
    printed = subprocess.run(
        [
            sys.executable,
            "-c",
            "from controlplane import settings; print(settings.ENCRYPTION_KEYS)",
        ],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert printed.strip() == str([NEW_KEY, OLD_KEY])


def _a_query_waits_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"
        )
        return bool(cursor.fetchone()[0])


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_secret_saved_while_the_rotation_runs_is_not_overwritten(settings):
    settings.ENCRYPTION_KEYS = [OLD_KEY]
    integration = Integration(kind=Integration.Kind.RAILWAY, name="railway")
    integration.set_secrets({"token": TOKEN})
    integration.save()
    settings.ENCRYPTION_KEYS = [NEW_KEY, OLD_KEY]
    locked, save = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def an_owner_saving_a_new_token() -> None:
        try:
            with transaction.atomic():
                row = Integration.objects.select_for_update().get(pk=integration.pk)
                locked.set()
                save.wait(30)
                row.set_secrets({"token": "rw-the-newest-token"})
                row.save()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    def rotating() -> None:
        try:
            with acting_as(None):
                rotate_secrets()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    owner = threading.Thread(target=an_owner_saving_a_new_token)
    owner.start()
    assert locked.wait(30)
    rotation = threading.Thread(target=rotating)
    rotation.start()
    wait_for(_a_query_waits_on_a_lock)  # the rotation waits for the owner's save
    save.set()
    owner.join(30)
    rotation.join(30)
    assert errors == []
    assert Integration.objects.get(pk=integration.pk).secrets == {"token": "rw-the-newest-token"}
    settings.ENCRYPTION_KEYS = [NEW_KEY]
    assert Integration.objects.get(pk=integration.pk).secrets == {"token": "rw-the-newest-token"}


def test_a_listed_key_that_is_not_a_fernet_key_is_a_startup_error_naming_its_place(settings):
    settings.ENCRYPTION_KEYS = [NEW_KEY, "not-a-key", OLD_KEY]
    errors = encryption_keys()
    assert [(e.id, e.msg) for e in errors] == [
        ("controlplane.E010", "ENCRYPTION_KEYS entry 2 is not a Fernet key.")
    ]
    settings.ENCRYPTION_KEYS = [NEW_KEY, OLD_KEY]
    assert encryption_keys() == []
