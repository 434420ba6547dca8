"""Notifications: one condition, notified once per window, delivered with retries.

`notify()` records one delivery per channel and enqueues it. The send task claims
the delivery atomically (so a retry sweep and a countdown cannot send it twice),
tries once, logs the attempt, and on failure schedules the next attempt with
exponential backoff until `NOTIFY_MAX_ATTEMPTS`. A periodic sweep picks up
deliveries whose retry was lost (a restart in embedded mode, a lost message).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import timedelta

import httpx
from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from controlplane.background import enqueue
from controlplane.models import (
    DeliveryAttempt,
    NotificationChannel,
    NotificationDelivery,
    toggle_enabled,
)

log = logging.getLogger(__name__)

DISCORD_LIMIT = 2000
# A delivery still "sending" after this long lost its worker mid-send.
STALE_SENDING = timedelta(minutes=5)


class DeliveryFailed(Exception):
    """An attempt failed. `retry_after`: the service asked to wait this many seconds
    (a rate limit); the next attempt is not made sooner, whatever the backoff says."""

    def __init__(
        self, message: str, status_code: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after = retry_after


# Kinds sent by code outside this module (a chat bot's channel): the sender gets the
# whole delivery, to remember what one attempt already reached.
DeliverySender = Callable[[NotificationDelivery], int | None]
_senders: dict[str, DeliverySender] = {}


def register_sender(kind: str, sender: DeliverySender) -> None:
    _senders[kind] = sender


def notify(
    subject: str,
    body: str = "",
    *,
    dedupe_key: str,
    channels: Iterable[NotificationChannel] | None = None,
    window: timedelta | None = None,
) -> list[NotificationDelivery]:
    """Notify every enabled channel (or `channels`) unless `dedupe_key` did within `window`."""
    if not toggle_enabled("notifications.enabled", default=True):
        log.info("notifications are off; not sending %r", dedupe_key)
        return []
    window = window or timedelta(seconds=settings.NOTIFY_DEDUPE_WINDOW_SECONDS)
    since = timezone.now() - window
    targets = (
        list(channels)
        if channels is not None
        else list(NotificationChannel.objects.filter(enabled=True))
    )
    created = []
    for channel in targets:
        with transaction.atomic():
            # The channel row lock serialises concurrent notifies of one channel on
            # PostgreSQL; SQLite runs IMMEDIATE transactions, which serialise anyway.
            NotificationChannel._base_manager.select_for_update().filter(pk=channel.pk).first()
            if NotificationDelivery.objects.filter(
                channel=channel, dedupe_key=dedupe_key, created_at__gte=since
            ).exists():
                continue
            delivery = NotificationDelivery.objects.create(
                channel=channel,
                dedupe_key=dedupe_key,
                subject=subject[:200],
                body=body,
                next_attempt_at=timezone.now(),
            )
            _enqueue_send(delivery.pk)
        created.append(delivery)
    return created


def _enqueue_send(delivery_id: int, countdown: float | None = None) -> None:
    from controlplane.tasks import send_notification

    enqueue(send_notification, delivery_id, countdown=countdown)


def backoff_seconds(attempt: int) -> float:
    """Delay before the attempt after `attempt` failures: base, 2x base, 4x base..."""
    return settings.NOTIFY_RETRY_BASE_SECONDS * (2 ** max(attempt - 1, 0))


def send_delivery(delivery_id: int) -> NotificationDelivery | None:
    """Make one attempt at a delivery if it is due; schedule the next on failure."""
    now = timezone.now()
    claimed = NotificationDelivery.objects.filter(
        pk=delivery_id,
        status=NotificationDelivery.Status.PENDING,
        next_attempt_at__lte=now,
    ).update(status=NotificationDelivery.Status.SENDING, claimed_at=now)
    if not claimed:
        return None  # sent, failed for good, or claimed by another worker
    delivery = NotificationDelivery.objects.select_related("channel").get(pk=delivery_id)
    number = delivery.attempts + 1
    started = time.perf_counter()
    status_code = None
    retry_after: float | None = None
    sender = _senders.get(delivery.channel.kind)
    try:
        if sender is not None:
            status_code = sender(delivery)
        else:
            status_code = deliver(
                delivery.channel, delivery.subject, delivery.body, delivery.dedupe_key
            )
        error = ""
    except DeliveryFailed as exc:
        error, status_code, retry_after = str(exc), exc.status_code, exc.retry_after
    except Exception as exc:
        # Whatever else goes wrong counts as a failed attempt, so the delivery still
        # ends sent or failed instead of sitting in "sending". The type only: the
        # message of an unknown error may carry the secret target.
        log.exception("notification %s: unexpected error while sending", delivery_id)
        error = f"unexpected {type(exc).__name__}"
    duration_ms = int((time.perf_counter() - started) * 1000)
    with transaction.atomic():
        DeliveryAttempt.objects.create(
            delivery=delivery,
            number=number,
            ok=not error,
            status_code=status_code,
            error=error,
            duration_ms=duration_ms,
        )
        delivery.attempts = number
        delivery.last_error = error
        if not error:
            delivery.status = NotificationDelivery.Status.SENT
            delivery.sent_at = timezone.now()
            delivery.next_attempt_at = None
        elif number >= settings.NOTIFY_MAX_ATTEMPTS:
            delivery.status = NotificationDelivery.Status.FAILED
            delivery.next_attempt_at = None
            log.warning("notification %s failed for good after %d attempts", delivery.pk, number)
        else:
            delay = max(backoff_seconds(number), retry_after or 0.0)
            delivery.status = NotificationDelivery.Status.PENDING
            delivery.next_attempt_at = timezone.now() + timedelta(seconds=delay)
            _enqueue_send(delivery.pk, countdown=delay)
        delivery.save(
            update_fields=["attempts", "last_error", "status", "sent_at", "next_attempt_at"]
        )
    return delivery


def retry_due_deliveries() -> int:
    """Periodic sweep: re-enqueue due retries and deliveries stuck mid-send."""
    now = timezone.now()
    NotificationDelivery.objects.filter(
        status=NotificationDelivery.Status.SENDING, claimed_at__lt=now - STALE_SENDING
    ).update(status=NotificationDelivery.Status.PENDING, next_attempt_at=now)
    due = list(
        NotificationDelivery.objects.filter(
            status=NotificationDelivery.Status.PENDING, next_attempt_at__lte=now
        ).values_list("pk", flat=True)[:500]
    )
    for delivery_id in due:
        _enqueue_send(delivery_id)
    return len(due)


def deliver(channel: NotificationChannel, subject: str, body: str, dedupe_key: str) -> int | None:
    """Send one message to one channel; returns the HTTP status, raises DeliveryFailed."""
    if channel.kind == NotificationChannel.Kind.EMAIL:
        try:
            send_mail(subject, body or subject, settings.DEFAULT_FROM_EMAIL, [channel.target])
        except Exception as exc:
            raise DeliveryFailed(f"email: {type(exc).__name__}: {exc}") from exc
        return None
    if channel.kind == NotificationChannel.Kind.DISCORD:
        text = f"**{subject}**\n{body}".strip()
        payload: dict = {
            "content": text[: DISCORD_LIMIT - 1] + "…" if len(text) > DISCORD_LIMIT else text
        }
    else:
        payload = {
            "subject": subject,
            "body": body,
            "dedupe_key": dedupe_key,
            "sent_at": timezone.now().isoformat(),
            "source": settings.SITE_URL,
        }
    try:
        response = httpx.post(channel.target, json=payload, timeout=settings.NOTIFY_TIMEOUT_SECONDS)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        # InvalidURL is not an HTTPError: uncaught, it left the delivery "sending".
        # The URL is a secret (it carries the webhook's token): never put it in an error.
        raise DeliveryFailed(
            f"{type(exc).__name__} talking to the {channel.get_kind_display()}"
        ) from None
    if response.status_code >= 300:
        raise DeliveryFailed(
            f"HTTP {response.status_code}: {response.text[:300]}", status_code=response.status_code
        )
    return response.status_code
