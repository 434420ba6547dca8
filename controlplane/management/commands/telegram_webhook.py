from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from controlplane.audit import record
from controlplane.models import Integration
from controlplane.telegram import TelegramError
from controlplane.telegram_integration import WebhookNotPossible, register_webhook, remove_webhook


class Command(BaseCommand):
    help = (
        "Register a Telegram integration's webhook with Telegram (setWebhook, with a "
        "generated secret), or remove it (--delete). Needs SITE_URL to be the site's "
        "public https:// address."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("integration", help="The Telegram integration's name.")
        parser.add_argument(
            "--delete", action="store_true", help="Remove the webhook (to poll instead)."
        )

    def handle(self, *args: Any, integration: str, delete: bool, **options: Any) -> None:
        found = Integration.objects.filter(name=integration, kind=Integration.Kind.TELEGRAM).first()
        if found is None:
            names = Integration.objects.filter(kind=Integration.Kind.TELEGRAM).values_list(
                "name", flat=True
            )
            raise CommandError(
                f"No Telegram integration '{integration}'. Telegram integrations: "
                f"{', '.join(names) or 'none yet'}."
            )
        try:
            message = remove_webhook(found) if delete else register_webhook(found)
        except (WebhookNotPossible, TelegramError) as exc:
            raise CommandError(str(exc)) from exc
        record("integration.webhook_removed" if delete else "integration.webhook_set", found)
        self.stdout.write(self.style.SUCCESS(message))
