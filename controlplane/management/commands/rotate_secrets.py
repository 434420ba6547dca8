from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from controlplane.audit import acting_as
from controlplane.secret_rotation import UndecryptableSecret, rotate_secrets


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret with the first key of ENCRYPTION_KEYS, in one "
        "transaction. Put the new key first (the old one after it), run this, then drop "
        "the old key. Running it again changes nothing."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            with acting_as(None):
                report = rotate_secrets()
        except UndecryptableSecret as exc:
            raise CommandError(str(exc)) from exc
        for rotation in report.fields:
            self.stdout.write(
                f"{rotation.label}: {rotation.examined} examined, "
                f"{rotation.reencrypted} re-encrypted, {rotation.current} already current"
            )
        summary = (
            f"{report.examined} secrets examined, {report.reencrypted} re-encrypted, "
            f"{report.current} already current."
        )
        self.stdout.write(self.style.SUCCESS(summary))
