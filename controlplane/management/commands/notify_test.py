from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from controlplane.models import NotificationChannel, NotificationDelivery
from controlplane.notifications import send_delivery


class Command(BaseCommand):
    help = "Send a test message to a notification channel (by name or id) and report the result."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("channel", help="Channel name or id.")

    def handle(self, *args: Any, channel: str, **options: Any) -> None:
        # A name first: a channel may well be named "2024".
        found = NotificationChannel.objects.filter(name=channel).first()
        if found is None and channel.isdigit():
            found = NotificationChannel.objects.filter(pk=int(channel)).first()
        if found is None:
            names = (
                ", ".join(NotificationChannel.objects.values_list("name", flat=True)) or "none yet"
            )
            raise CommandError(f"No notification channel '{channel}'. Channels: {names}.")
        # A fresh dedupe key: a test is always sent, never de-duplicated away.
        delivery = NotificationDelivery.objects.create(
            channel=found,
            dedupe_key=f"notify_test:{timezone.now().isoformat()}",
            subject="Test notification from the control plane",
            body=f"If you can read this, channel '{found.name}' works.",
            next_attempt_at=timezone.now(),
        )
        result = send_delivery(delivery.pk)
        delivery.refresh_from_db()
        if result is None or delivery.status != NotificationDelivery.Status.SENT:
            raise CommandError(
                f"Sending to '{found.name}' failed: {delivery.last_error or delivery.status}. "
                f"Retries continue in the background (delivery #{delivery.pk})."
            )
        self.stdout.write(
            self.style.SUCCESS(f"Sent to '{found.name}' ({found.get_kind_display()}).")
        )
