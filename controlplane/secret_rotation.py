"""Re-encrypting every stored secret with the first of `ENCRYPTION_KEYS`.

To rotate a key: put the new key first in `ENCRYPTION_KEYS` (the old one after it,
so both decrypt), restart, run `bin/manage rotate_secrets`, then drop the old key.

Every model field that is an `EncryptedTextField` is found through the app registry,
so a secret added later is rotated without this module knowing it. The whole rotation
is one transaction: a value that no listed key decrypts stops it with its model,
field and row named, and nothing is changed. A value the first key already decrypts
is left as it is, so a second run changes nothing. Rows are rewritten below the
audited ORM (a rotation changes no configuration); one audit event sums it up.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from django.apps import apps
from django.conf import settings
from django.db import models, transaction
from django.db.models.functions import Cast

from controlplane import audit
from controlplane.crypto import EncryptedTextField, fernet


@dataclass
class FieldRotation:
    label: str  # "app.Model.field"
    examined: int = 0
    reencrypted: int = 0

    @property
    def current(self) -> int:
        return self.examined - self.reencrypted


@dataclass
class RotationReport:
    fields: list[FieldRotation] = field(default_factory=list)

    @property
    def examined(self) -> int:
        return sum(f.examined for f in self.fields)

    @property
    def reencrypted(self) -> int:
        return sum(f.reencrypted for f in self.fields)

    @property
    def current(self) -> int:
        return sum(f.current for f in self.fields)


class UndecryptableSecret(Exception):
    def __init__(self, label: str, pk: Any) -> None:
        self.label, self.pk = label, pk
        super().__init__(
            f"{label} of row {pk} cannot be decrypted with any key in ENCRYPTION_KEYS "
            "(was the key it was encrypted with left out?). Nothing was changed."
        )


def encrypted_fields() -> Iterator[tuple[type[models.Model], EncryptedTextField]]:
    """Every stored encrypted field of every installed model."""
    for model in apps.get_models():
        if model._meta.proxy or not model._meta.managed:
            continue
        for model_field in model._meta.concrete_fields:
            if isinstance(model_field, EncryptedTextField):
                yield model, model_field


def rotate_secrets() -> RotationReport:
    """Re-encrypt with the first key every secret it does not already encrypt."""
    first_key = Fernet(settings.ENCRYPTION_KEYS[0].encode())
    every_key = fernet()
    report = RotationReport()
    with transaction.atomic():
        for model, model_field in encrypted_fields():
            rotation = FieldRotation(f"{model._meta.label}.{model_field.name}")
            report.fields.append(rotation)
            # Plain QuerySets: the model's default manager may audit; the stored
            # ciphertext is read as text (the field itself would decrypt it) and rows
            # stay locked until the end, so a concurrent save cannot be overwritten.
            rows = (
                models.QuerySet(model=model)
                .select_for_update()
                .annotate(stored=Cast(model_field.attname, output_field=models.TextField()))
                .order_by("pk")
                .values_list("pk", "stored")
            )
            for pk, stored in rows:
                if not stored:
                    continue
                rotation.examined += 1
                token = stored.encode()
                try:
                    first_key.decrypt(token)
                    continue  # already the first key's
                except InvalidToken:
                    pass
                try:
                    rotated = every_key.rotate(token).decode()
                except InvalidToken:
                    raise UndecryptableSecret(rotation.label, pk) from None
                models.QuerySet(model=model).filter(pk=pk).update(
                    **{model_field.attname: models.Value(rotated, models.TextField())}
                )
                rotation.reencrypted += 1
        if report.reencrypted:
            audit.record(
                "secrets.rotated",
                after={
                    "examined": report.examined,
                    "reencrypted": report.reencrypted,
                    "already_current": report.current,
                    "fields": {f.label: f.reencrypted for f in report.fields},
                },
                target_repr="every stored secret",
            )
    return report
