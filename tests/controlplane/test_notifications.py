"""Notifications: delivery with retries against a real local HTTP server, de-duplication,
the retry sweep and the atomic claim."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.db import connections
from django.utils import timezone

from controlplane import notifications
from controlplane.models import (
    DeliveryAttempt,
    FeatureToggle,
    NotificationChannel,
    NotificationDelivery,
)
from controlplane.notifications import (
    backoff_seconds,
    notify,
    retry_due_deliveries,
    send_delivery,
)
from tests.local_servers import SECRET_PATH, LocalWebhook, closed_port

pytestmark = pytest.mark.django_db


@pytest.fixture
def webhook() -> Iterator[LocalWebhook]:
    with LocalWebhook() as server:
        yield server


def make_channel(name: str, target: str, kind: str = NotificationChannel.Kind.WEBHOOK) -> Any:
    return NotificationChannel.objects.create(name=name, kind=kind, target=target)


def test_a_webhook_is_retried_until_it_succeeds(
    webhook: LocalWebhook, django_capture_on_commit_callbacks: Any
) -> None:
    webhook.statuses = [500, 500]
    channel = make_channel("ops-hook", webhook.url)

    with django_capture_on_commit_callbacks(execute=True):
        [delivery] = notify("Budget at 90%", "routing spent $90 of $100", dedupe_key="budget:90")

    delivery.refresh_from_db()
    assert delivery.status == NotificationDelivery.Status.SENT
    assert delivery.attempts == 3
    assert delivery.sent_at is not None
    assert delivery.next_attempt_at is None
    assert delivery.last_error == ""
    log = list(delivery.attempt_log.order_by("number"))
    assert [(a.number, a.ok, a.status_code) for a in log] == [
        (1, False, 500),
        (2, False, 500),
        (3, True, 204),
    ]
    assert all("HTTP 500" in a.error for a in log[:2])
    assert len(webhook.received) == 3
    for request in webhook.received:
        assert request["path"] == SECRET_PATH
        assert request["content_type"] == "application/json"
        assert request["json"]["subject"] == "Budget at 90%"
        assert request["json"]["body"] == "routing spent $90 of $100"
        assert request["json"]["dedupe_key"] == "budget:90"
    assert channel.deliveries.get() == delivery


def test_a_discord_channel_is_retried_until_it_succeeds_with_content(
    webhook: LocalWebhook, django_capture_on_commit_callbacks: Any
) -> None:
    webhook.statuses = [500, 500]
    make_channel("ops-discord", webhook.url, NotificationChannel.Kind.DISCORD)

    with django_capture_on_commit_callbacks(execute=True):
        [delivery] = notify("Worker lost", "worker w-3 stopped", dedupe_key="worker:w-3")

    delivery.refresh_from_db()
    assert delivery.status == NotificationDelivery.Status.SENT
    assert list(delivery.attempt_log.values_list("ok", "status_code")) == [
        (False, 500),
        (False, 500),
        (True, 204),
    ]
    assert [r["json"] for r in webhook.received] == [
        {"content": "**Worker lost**\nworker w-3 stopped"}
    ] * 3


def test_a_long_discord_message_is_cut_to_the_discord_limit(
    webhook: LocalWebhook, django_capture_on_commit_callbacks: Any
) -> None:
    make_channel("ops-discord", webhook.url, NotificationChannel.Kind.DISCORD)

    with django_capture_on_commit_callbacks(execute=True):
        notify("Long", "x" * 5000, dedupe_key="long")

    content = webhook.received[0]["json"]["content"]
    assert len(content) == 2000
    assert content.endswith("…")


def test_a_delivery_fails_for_good_after_the_maximum_attempts(
    webhook: LocalWebhook, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.NOTIFY_MAX_ATTEMPTS = 3
    webhook.statuses = [500] * 10
    make_channel("ops-hook", webhook.url)

    with django_capture_on_commit_callbacks(execute=True):
        [delivery] = notify("Down", dedupe_key="down")

    delivery.refresh_from_db()
    assert delivery.status == NotificationDelivery.Status.FAILED
    assert delivery.attempts == 3
    assert delivery.next_attempt_at is None
    assert delivery.last_error.startswith("HTTP 500")
    assert list(delivery.attempt_log.values_list("ok", flat=True)) == [False] * 3
    assert len(webhook.received) == 3
    # Failed for good: neither a direct send nor the sweep tries again.
    assert send_delivery(delivery.pk) is None
    with django_capture_on_commit_callbacks(execute=True):
        assert retry_due_deliveries() == 0
    assert len(webhook.received) == 3


def test_the_backoff_doubles_with_each_failed_attempt(settings: Any) -> None:
    settings.NOTIFY_RETRY_BASE_SECONDS = 10
    assert [backoff_seconds(n) for n in (1, 2, 3, 4)] == [10, 20, 40, 80]


def test_a_failed_attempt_waits_for_its_backoff_before_the_next(
    webhook: LocalWebhook, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.NOTIFY_RETRY_BASE_SECONDS = 10
    webhook.statuses = [500]
    make_channel("ops-hook", webhook.url)

    before = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        [delivery] = notify("Down", dedupe_key="down")
    # Eager mode runs the retry at once, but it is not due yet, so it is not sent.
    delivery.refresh_from_db()
    assert delivery.status == NotificationDelivery.Status.PENDING
    assert delivery.attempts == 1
    assert delivery.next_attempt_at >= before + timedelta(seconds=10)
    assert send_delivery(delivery.pk) is None
    with django_capture_on_commit_callbacks(execute=True):
        assert retry_due_deliveries() == 0
    assert len(webhook.received) == 1

    NotificationDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert retry_due_deliveries() == 1
    delivery.refresh_from_db()
    assert delivery.status == NotificationDelivery.Status.SENT
    assert delivery.attempts == 2
    assert len(webhook.received) == 2


def test_a_refused_connection_does_not_leak_the_webhook_url(
    settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.NOTIFY_MAX_ATTEMPTS = 2
    url = f"http://127.0.0.1:{closed_port()}{SECRET_PATH}"
    make_channel("ops-hook", url)

    with django_capture_on_commit_callbacks(execute=True):
        [delivery] = notify("Down", dedupe_key="down")

    delivery.refresh_from_db()
    assert delivery.status == NotificationDelivery.Status.FAILED
    assert "ConnectError" in delivery.last_error
    errors = [delivery.last_error, *delivery.attempt_log.values_list("error", flat=True)]
    for error in errors:
        assert error
        assert "s3cr3t-webhook-token" not in error
        assert "127.0.0.1" not in error
        assert SECRET_PATH not in error
    assert list(delivery.attempt_log.values_list("status_code", flat=True)) == [None, None]


def test_a_malformed_webhook_url_fails_the_attempt_without_leaking_it(
    settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    # The admin validates URLs, but a channel made in a shell or a script is not.
    settings.NOTIFY_MAX_ATTEMPTS = 2
    make_channel("ops-hook", "http://[::1/hooks/s3cr3t-webhook-token")

    with django_capture_on_commit_callbacks(execute=True):
        [delivery] = notify("Down", dedupe_key="down")

    delivery.refresh_from_db()
    assert delivery.status == NotificationDelivery.Status.FAILED
    assert delivery.attempts == 2
    assert delivery.last_error
    assert "s3cr3t-webhook-token" not in delivery.last_error


def test_the_webhook_url_is_stored_encrypted(webhook: LocalWebhook) -> None:
    channel = make_channel("ops-hook", webhook.url)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT target FROM {NotificationChannel._meta.db_table} WHERE id = %s",  # noqa: S608
            [channel.pk],
        )
        [stored] = cursor.fetchone()
    assert "s3cr3t-webhook-token" not in stored
    assert NotificationChannel.objects.get(pk=channel.pk).target == webhook.url


def test_the_same_condition_notifies_each_channel_once_within_the_window(
    webhook: LocalWebhook, django_capture_on_commit_callbacks: Any
) -> None:
    hook = make_channel("ops-hook", webhook.url)
    discord = make_channel("ops-discord", webhook.url, NotificationChannel.Kind.DISCORD)

    with django_capture_on_commit_callbacks(execute=True):
        first = notify("Budget at 90%", dedupe_key="budget:90")
        second = notify("Budget at 90%", dedupe_key="budget:90")

    assert {d.channel for d in first} == {hook, discord}
    assert second == []
    assert NotificationDelivery.objects.count() == 2
    assert len(webhook.received) == 2


def test_the_same_condition_notifies_again_after_the_window(
    webhook: LocalWebhook, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.NOTIFY_DEDUPE_WINDOW_SECONDS = 600
    make_channel("ops-hook", webhook.url)
    with django_capture_on_commit_callbacks(execute=True):
        notify("Budget at 90%", dedupe_key="budget:90")
    NotificationDelivery.objects.update(created_at=timezone.now() - timedelta(seconds=601))

    with django_capture_on_commit_callbacks(execute=True):
        again = notify("Budget at 90%", dedupe_key="budget:90")

    assert len(again) == 1
    assert NotificationDelivery.objects.count() == 2
    assert len(webhook.received) == 2


def test_another_condition_is_not_deduplicated_away(
    webhook: LocalWebhook, django_capture_on_commit_callbacks: Any
) -> None:
    make_channel("ops-hook", webhook.url)
    with django_capture_on_commit_callbacks(execute=True):
        notify("Budget at 90%", dedupe_key="budget:90")
        notify("Budget at 100%", dedupe_key="budget:100")
    assert NotificationDelivery.objects.count() == 2


def test_disabled_channels_are_not_notified(
    webhook: LocalWebhook, django_capture_on_commit_callbacks: Any
) -> None:
    make_channel("ops-hook", webhook.url)
    NotificationChannel.objects.create(
        name="muted", kind=NotificationChannel.Kind.WEBHOOK, target=webhook.url, enabled=False
    )
    with django_capture_on_commit_callbacks(execute=True):
        deliveries = notify("Down", dedupe_key="down")
    assert [d.channel.name for d in deliveries] == ["ops-hook"]
    assert len(webhook.received) == 1


def test_nothing_is_sent_when_notifications_are_toggled_off(
    webhook: LocalWebhook, django_capture_on_commit_callbacks: Any
) -> None:
    make_channel("ops-hook", webhook.url)
    with django_capture_on_commit_callbacks(execute=True):
        toggle = FeatureToggle.objects.get(key="notifications.enabled")
        toggle.enabled = False
        toggle.save()

    with django_capture_on_commit_callbacks(execute=True):
        assert notify("Down", dedupe_key="down") == []

    assert NotificationDelivery.objects.count() == 0
    assert webhook.received == []


def test_an_email_channel_sends_through_the_mail_backend(
    django_capture_on_commit_callbacks: Any,
) -> None:
    make_channel("ops-mail", "ops@example.com", NotificationChannel.Kind.EMAIL)

    with django_capture_on_commit_callbacks(execute=True):
        [delivery] = notify("Budget at 90%", "routing spent $90", dedupe_key="budget:90")

    delivery.refresh_from_db()
    assert delivery.status == NotificationDelivery.Status.SENT
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.subject == "Budget at 90%"
    assert message.body == "routing spent $90"
    assert message.to == ["ops@example.com"]
    assert list(delivery.attempt_log.values_list("ok", "status_code")) == [(True, None)]


def test_the_sweep_resends_due_pending_deliveries(
    webhook: LocalWebhook, django_capture_on_commit_callbacks: Any
) -> None:
    channel = make_channel("ops-hook", webhook.url)
    # A retry whose countdown was lost (a restart in embedded mode).
    lost = NotificationDelivery.objects.create(
        channel=channel,
        dedupe_key="lost",
        subject="Lost retry",
        attempts=1,
        next_attempt_at=timezone.now() - timedelta(minutes=1),
    )
    later = NotificationDelivery.objects.create(
        channel=channel,
        dedupe_key="later",
        subject="Not yet",
        attempts=1,
        next_attempt_at=timezone.now() + timedelta(minutes=1),
    )

    with django_capture_on_commit_callbacks(execute=True):
        assert retry_due_deliveries() == 1

    lost.refresh_from_db()
    later.refresh_from_db()
    assert lost.status == NotificationDelivery.Status.SENT
    assert lost.attempts == 2
    assert later.status == NotificationDelivery.Status.PENDING
    assert later.attempts == 1
    assert [r["json"]["subject"] for r in webhook.received] == ["Lost retry"]


def test_the_sweep_resets_deliveries_stuck_sending_for_more_than_five_minutes(
    webhook: LocalWebhook, django_capture_on_commit_callbacks: Any
) -> None:
    channel = make_channel("ops-hook", webhook.url)
    now = timezone.now()
    stuck = NotificationDelivery.objects.create(
        channel=channel,
        dedupe_key="stuck",
        subject="Worker died mid-send",
        status=NotificationDelivery.Status.SENDING,
        claimed_at=now - timedelta(minutes=6),
    )
    in_flight = NotificationDelivery.objects.create(
        channel=channel,
        dedupe_key="in-flight",
        subject="Being sent right now",
        status=NotificationDelivery.Status.SENDING,
        claimed_at=now - timedelta(minutes=1),
    )

    with django_capture_on_commit_callbacks(execute=True):
        assert retry_due_deliveries() == 1

    stuck.refresh_from_db()
    in_flight.refresh_from_db()
    assert stuck.status == NotificationDelivery.Status.SENT
    assert in_flight.status == NotificationDelivery.Status.SENDING
    assert [r["json"]["subject"] for r in webhook.received] == ["Worker died mid-send"]


def test_a_sent_delivery_is_never_sent_twice(
    webhook: LocalWebhook, django_capture_on_commit_callbacks: Any
) -> None:
    make_channel("ops-hook", webhook.url)
    with django_capture_on_commit_callbacks(execute=True):
        [delivery] = notify("Down", dedupe_key="down")
    assert len(webhook.received) == 1

    assert send_delivery(delivery.pk) is None
    with django_capture_on_commit_callbacks(execute=True):
        assert retry_due_deliveries() == 0

    assert len(webhook.received) == 1
    assert DeliveryAttempt.objects.filter(delivery=delivery).count() == 1


def test_a_delivery_claimed_by_another_worker_is_not_sent_again(webhook: LocalWebhook) -> None:
    channel = make_channel("ops-hook", webhook.url)
    claimed = NotificationDelivery.objects.create(
        channel=channel,
        dedupe_key="claimed",
        subject="Claimed",
        status=NotificationDelivery.Status.SENDING,
        claimed_at=timezone.now(),
        next_attempt_at=timezone.now(),
    )

    assert send_delivery(claimed.pk) is None

    assert webhook.received == []
    claimed.refresh_from_db()
    assert claimed.status == NotificationDelivery.Status.SENDING
    assert claimed.attempts == 0


@pytest.mark.django_db(transaction=True)
def test_workers_racing_for_one_delivery_send_it_once(settings: Any) -> None:
    # Generous bounds, only against a hang: they say nothing about speed.
    settings.NOTIFY_TIMEOUT_SECONDS = 120
    hang_guard = 120
    answer = threading.Event()
    with LocalWebhook(hold=answer) as webhook:
        channel = make_channel("ops-hook", webhook.url)
        delivery = NotificationDelivery.objects.create(
            channel=channel, dedupe_key="race", subject="Race", next_attempt_at=timezone.now()
        )
        start = threading.Barrier(4)
        results: list[Any] = []
        returned = threading.Condition()

        def worker() -> None:
            try:
                start.wait()
                result = send_delivery(delivery.pk)
                with returned:
                    results.append(result)
                    returned.notify_all()
            finally:
                connections.close_all()

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        # The webhook holds the first sender's request until the other three have
        # given up on the delivery: they raced it while it was being sent.
        try:
            with returned:
                assert returned.wait_for(lambda: len(results) == 3, timeout=hang_guard), results
            assert results == [None, None, None]
        finally:
            answer.set()
        for thread in threads:
            thread.join(timeout=hang_guard)

    assert len(results) == 4
    assert sum(result is not None for result in results) == 1
    assert len(webhook.received) == 1
    delivery.refresh_from_db()
    assert delivery.status == NotificationDelivery.Status.SENT
    assert delivery.attempts == 1


def test_an_unexpected_error_counts_as_a_failed_attempt_without_leaking_the_target(
    monkeypatch: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.NOTIFY_RETRY_BASE_SECONDS = 60  # keep the retry for later
    secret = f"https://hooks.example.com{SECRET_PATH}"
    channel = make_channel("flaky", secret)

    def explode(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError(f"cannot reach {secret}")

    monkeypatch.setattr(notifications, "deliver", explode)
    with django_capture_on_commit_callbacks(execute=True):
        [delivery] = notify("Disk almost full", dedupe_key="disk", channels=[channel])

    delivery.refresh_from_db()
    assert delivery.status == NotificationDelivery.Status.PENDING
    assert delivery.attempts == 1
    assert delivery.last_error == "unexpected RuntimeError"
    assert SECRET_PATH not in delivery.attempt_log.get().error
