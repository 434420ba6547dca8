from __future__ import annotations

from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from controlplane.models import NotificationChannel, NotificationDelivery
from tests.local_servers import SECRET_PATH, LocalWebhook

pytestmark = pytest.mark.django_db


@pytest.fixture
def webhook() -> Iterator[LocalWebhook]:
    with LocalWebhook() as server:
        yield server


def notify_test(*args: str) -> str:
    out = StringIO()
    call_command("notify_test", *args, stdout=out)
    return out.getvalue()


def test_it_sends_a_test_message_to_a_channel_named_on_the_command_line(
    webhook: LocalWebhook,
) -> None:
    NotificationChannel.objects.create(
        name="ops-hook", kind=NotificationChannel.Kind.WEBHOOK, target=webhook.url
    )

    output = notify_test("ops-hook")

    assert "Sent to 'ops-hook' (JSON webhook)." in output
    [request] = webhook.received
    assert request["path"] == SECRET_PATH
    assert request["json"]["subject"] == "Test notification from the control plane"
    assert "channel 'ops-hook' works" in request["json"]["body"]
    delivery = NotificationDelivery.objects.get()
    assert delivery.status == NotificationDelivery.Status.SENT


def test_it_finds_a_channel_by_id(webhook: LocalWebhook) -> None:
    channel = NotificationChannel.objects.create(
        name="ops-discord", kind=NotificationChannel.Kind.DISCORD, target=webhook.url
    )

    output = notify_test(str(channel.pk))

    assert "Sent to 'ops-discord' (Discord webhook)." in output
    [request] = webhook.received
    assert request["json"]["content"].startswith("**Test notification from the control plane**")


def test_it_finds_a_channel_whose_name_is_a_number_by_its_name(webhook: LocalWebhook) -> None:
    other = NotificationChannel.objects.create(
        name="ops-hook", kind=NotificationChannel.Kind.WEBHOOK, target="http://127.0.0.1:9/x"
    )
    NotificationChannel.objects.create(
        name=str(other.pk + 1000), kind=NotificationChannel.Kind.WEBHOOK, target=webhook.url
    )

    output = notify_test(str(other.pk + 1000))

    assert f"Sent to '{other.pk + 1000}'" in output
    assert len(webhook.received) == 1


def test_it_sends_every_time_it_is_run(webhook: LocalWebhook) -> None:
    NotificationChannel.objects.create(
        name="ops-hook", kind=NotificationChannel.Kind.WEBHOOK, target=webhook.url
    )

    notify_test("ops-hook")
    notify_test("ops-hook")

    assert len(webhook.received) == 2


def test_it_lists_the_channels_when_the_channel_is_unknown() -> None:
    for name in ("ops-hook", "ops-discord"):
        NotificationChannel.objects.create(
            name=name, kind=NotificationChannel.Kind.WEBHOOK, target="http://127.0.0.1:9/x"
        )

    with pytest.raises(CommandError, match="No notification channel 'nope'") as excinfo:
        notify_test("nope")

    assert "Channels: ops-discord, ops-hook." in str(excinfo.value)


def test_it_says_so_when_there_are_no_channels_yet() -> None:
    with pytest.raises(CommandError, match="Channels: none yet"):
        notify_test("42")


def test_it_fails_when_the_server_fails(webhook: LocalWebhook, settings: Any) -> None:
    settings.NOTIFY_MAX_ATTEMPTS = 3
    webhook.statuses = [500] * 5
    NotificationChannel.objects.create(
        name="ops-hook", kind=NotificationChannel.Kind.WEBHOOK, target=webhook.url
    )

    with pytest.raises(CommandError, match="Sending to 'ops-hook' failed: HTTP 500") as excinfo:
        notify_test("ops-hook")

    assert "s3cr3t-webhook-token" not in str(excinfo.value)
    delivery = NotificationDelivery.objects.get()
    assert delivery.status == NotificationDelivery.Status.PENDING
    assert delivery.attempts == 1
