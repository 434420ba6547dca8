from __future__ import annotations

import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from controlplane.models import Integration
from controlplane.telegram import TelegramError
from controlplane.telegram_integration import uses_webhook
from controlplane.telegram_polling import TelegramPoller, poll_once, polling_integrations


class Command(BaseCommand):
    help = (
        "Fetch Telegram updates by long polling for every enabled Telegram integration "
        "that does not use a webhook (or the named ones), until stopped. The embedded "
        "mode does this in its own process; run it once, as its own process, in scale mode."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("integrations", nargs="*", help="Only these integrations (names).")
        parser.add_argument(
            "--once", action="store_true", help="One getUpdates per integration, then exit."
        )

    def handle(self, *args: Any, integrations: list[str], once: bool, **options: Any) -> None:
        for name in integrations:
            found = Integration.objects.filter(name=name, kind=Integration.Kind.TELEGRAM).first()
            if found is None:
                raise CommandError(f"No Telegram integration '{name}'.")
            if uses_webhook(found):
                raise CommandError(
                    f"{name} takes its updates by webhook: Telegram refuses getUpdates while "
                    "a webhook is set. Set Updates to Long polling and remove the webhook "
                    f"(bin/manage telegram_webhook {name} --delete)."
                )
        poller = TelegramPoller(names=integrations or None)
        if once:
            self._once(poller)
            return
        signal.signal(signal.SIGTERM, lambda *_: poller.stop.set())
        self.stdout.write("Polling Telegram; stop with Ctrl-C.")
        try:
            poller.run()
        except KeyboardInterrupt:
            poller.stop.set()

    def _once(self, poller: TelegramPoller) -> None:
        chosen = [i for i in polling_integrations() if not poller.names or i.name in poller.names]
        for integration in chosen:
            try:
                outcomes = poll_once(integration, timeout=0)
            except TelegramError as exc:
                raise CommandError(f"{integration.name}: {exc}") from exc
            self.stdout.write(f"{integration.name}: {len(outcomes)} updates handled.")
        if not chosen:
            self.stdout.write("No Telegram integration polls (none, or all use a webhook).")
