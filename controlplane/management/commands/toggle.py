from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from controlplane.audit import acting_as
from controlplane.models import FeatureToggle


class Command(BaseCommand):
    help = (
        "List feature toggles, or unlock one. Unlocking is only possible from the server's "
        "shell, never from the web, and is audited with its reason."
    )

    def add_arguments(self, parser: Any) -> None:
        sub = parser.add_subparsers(dest="verb", required=True)
        sub.add_parser("list", help="Show every toggle.")
        unlock = sub.add_parser("unlock", help="Unlock a locked toggle.")
        unlock.add_argument("key")
        unlock.add_argument("--reason", required=True)

    def handle(self, *args: Any, verb: str, **options: Any) -> None:
        if verb == "list":
            for toggle in FeatureToggle.objects.all():
                flags = " ".join(f for f in ("locked", "critical") if getattr(toggle, f))
                state = "on " if toggle.enabled else "off"
                self.stdout.write(f"{state}  {toggle.key}  {flags}".rstrip())
            return
        key = options["key"]
        if not FeatureToggle.objects.filter(key=key).exists():
            raise CommandError(f"No feature toggle '{key}'.")
        try:
            with acting_as(None):
                FeatureToggle.objects.unlock(key, reason=options["reason"])
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        self.stdout.write(self.style.SUCCESS(f"Unlocked '{key}'."))
