"""Notification channels of kind Discord bot, against the fake Discord API: the bot
writes to each linked member's direct messages (opening the DM channel), approval
requests carry Approve/Reject buttons, with the delivery log, retries on Discord's
rate limit (honouring retry_after) and outages, no member written to twice by one
delivery, de-duplication, the admin form's validation and `notify_test`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from controlplane.admin import NotificationChannelForm
from controlplane.approvals import request_approval
from controlplane.models import ChatMessage, Integration, NotificationChannel, NotificationDelivery
from controlplane.notifications import notify, send_delivery
from tests.controlplane.discord_bots import (
    ALICE,
    DM_CHANNEL,
    MALLORY,
    SERVER_CHANNEL,
    TOKEN_PART,
    app,
    discord,
    linked,
    signing_key,
)
from tests.controlplane.discord_notices import buttons_of, make_channel, messages_to

__all__ = ["app", "discord", "signing_key"]  # fixtures

pytestmark = pytest.mark.django_db

BOB = "7700770077007700"
BOBS_DM = "4411441144114411"


@pytest.fixture(autouse=True)
def _direct_channels(discord: Any) -> None:
    discord.direct_channels.update({ALICE: DM_CHANNEL, BOB: BOBS_DM})


def send(capture: Any, subject: str = "Budget at 90%", key: str = "budget:90") -> Any:
    with capture(execute=True):
        [delivery] = notify(subject, "routing spent <$90> of *$100*", dedupe_key=key)
    delivery.refresh_from_db()
    return delivery


def attempts(delivery: NotificationDelivery) -> list[tuple[int, bool, int | None]]:
    return [(a.number, a.ok, a.status_code) for a in delivery.attempt_log.order_by("number")]


def test_every_linked_member_gets_a_direct_message(
    discord, app, operator, owner, outsider, django_capture_on_commit_callbacks
):
    linked(app, operator, ALICE, chat_id=SERVER_CHANNEL)  # linked from a server's channel
    linked(app, owner, BOB, chat_id=BOBS_DM)
    make_channel()

    delivery = send(django_capture_on_commit_callbacks)

    assert delivery.status == NotificationDelivery.Status.SENT
    assert attempts(delivery) == [(1, True, 200)]
    opened = [r.body for r in discord.posted("POST") if r.path == "/users/@me/channels"]
    assert opened == [{"recipient_id": ALICE}, {"recipient_id": BOB}]
    for channel in (DM_CHANNEL, BOBS_DM):
        [message] = messages_to(discord, channel)
        assert message["content"] == "**Budget at 90%**\nrouting spent \\<$90> of \\*$100\\*"
        assert message["allowed_mentions"] == {"parse": []}
        assert buttons_of(message) == {}
    assert messages_to(discord, SERVER_CHANNEL) == []  # never to the channel linked from
    assert ChatMessage.objects.filter(delivery=delivery).count() == 2


def test_an_audience_by_tier_and_a_channel_by_id(
    discord, app, observer, operator, owner, django_capture_on_commit_callbacks
):
    linked(app, observer, MALLORY, chat_id="4422442244224422")
    linked(app, operator, ALICE)
    linked(app, owner, BOB, chat_id=BOBS_DM)
    make_channel("ops-discord:owners", name="owners")
    make_channel("ops-discord:operators", name="operators")
    make_channel(f"ops-discord:chat:{SERVER_CHANNEL}", name="ops-room")

    with django_capture_on_commit_callbacks(execute=True):
        request_approval(action="test.tool", requested_by=operator, reason="please")

    assert len(messages_to(discord, BOBS_DM)) == 2  # owners and operators
    assert len(messages_to(discord, DM_CHANNEL)) == 1  # operators
    assert discord.direct_channels.get(MALLORY) is None  # an observer is in neither
    [in_room] = messages_to(discord, SERVER_CHANNEL)
    assert "Approval needed: test.tool" in in_room["content"]
    # A server channel's message belongs to no one account: no buttons there.
    assert buttons_of(in_room) == {}
    assert all(set(buttons_of(m)) == {"Approve", "Reject"} for m in messages_to(discord, BOBS_DM))


def test_a_rate_limit_waits_its_retry_after_and_no_member_gets_it_twice(
    discord, app, operator, owner, django_capture_on_commit_callbacks
):
    linked(app, operator, ALICE)
    linked(app, owner, BOB, chat_id=BOBS_DM)
    make_channel()
    original = discord.answer
    limited: list[str] = []

    def answer(token: str, method: str, path: str, body: Any) -> Any:
        if path == f"/channels/{BOBS_DM}/messages" and not limited:
            limited.append(path)
            return discord.rate_limited(retry_after=40)  # longer than the client waits
        return original(token, method, path, body)

    discord.answer = answer  # type: ignore[method-assign]
    before = timezone.now()

    delivery = send(django_capture_on_commit_callbacks)

    assert delivery.status == NotificationDelivery.Status.PENDING
    assert attempts(delivery) == [(1, False, 429)]
    assert "retry after 40" in delivery.last_error
    assert delivery.next_attempt_at >= before + timedelta(seconds=40)
    assert send_delivery(delivery.pk) is None  # not due before retry_after

    NotificationDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    send_delivery(delivery.pk)

    delivery.refresh_from_db()
    assert delivery.status == NotificationDelivery.Status.SENT
    assert attempts(delivery) == [(1, False, 429), (2, True, 200)]
    assert len(messages_to(discord, DM_CHANNEL)) == 1  # not written to twice
    assert len(messages_to(discord, BOBS_DM)) == 1


def test_an_outage_leaves_the_delivery_retrying_until_discord_is_back(
    discord, app, operator, django_capture_on_commit_callbacks
):
    linked(app, operator, ALICE)
    make_channel()
    discord.fail(discord.outage(), discord.outage())

    delivery = send(django_capture_on_commit_callbacks)

    assert delivery.status == NotificationDelivery.Status.SENT
    assert attempts(delivery) == [(1, False, 502), (2, False, 502), (3, True, 200)]
    assert len(messages_to(discord, DM_CHANNEL)) == 1


def test_the_same_condition_notifies_once_per_window(
    discord, app, operator, django_capture_on_commit_callbacks
):
    linked(app, operator, ALICE)
    make_channel()

    send(django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        assert notify("Budget at 90%", "again", dedupe_key="budget:90") == []

    assert len(messages_to(discord, DM_CHANNEL)) == 1


def test_nobody_linked_fails_with_a_reason(discord, app, django_capture_on_commit_callbacks):
    make_channel()

    delivery = send(django_capture_on_commit_callbacks)

    assert delivery.status != NotificationDelivery.Status.SENT
    assert "no staff member linked a Discord account to ops-discord" in delivery.last_error
    assert discord.messages == {}


def test_the_bot_token_never_reaches_the_delivery_log(
    discord, app, operator, django_capture_on_commit_callbacks
):
    linked(app, operator, ALICE)
    make_channel()
    app.settings = {**app.settings, "api_url": "http://127.0.0.1:9"}  # nothing listens
    app.save()

    delivery = send(django_capture_on_commit_callbacks)

    assert "Could not reach Discord" in delivery.last_error
    texts = [delivery.last_error, *delivery.attempt_log.values_list("error", flat=True)]
    assert not any(TOKEN_PART in text for text in texts)


class TestTheAdminForm:
    def form(self, target: str) -> Any:
        return NotificationChannelForm(
            data={
                "name": "dc",
                "kind": NotificationChannel.Kind.DISCORD_BOT,
                "target": target,
                "enabled": "on",
            }
        )

    def test_a_target_naming_a_bot_and_an_audience_is_accepted(self, app):
        for target in ("ops-discord", "ops-discord:owners", f"ops-discord:chat:{SERVER_CHANNEL}"):
            form = self.form(target)
            assert form.is_valid(), (target, form.errors)

    @pytest.mark.parametrize(
        ("target", "says"),
        [
            ("no-such-bot", "no Discord integration named 'no-such-bot'"),
            ("ops-discord:everyone", "'everyone' is not whom"),
            ("ops-discord:chat:abc", "'abc' is not a Discord chat id"),
        ],
    )
    def test_a_bad_target_is_refused_with_a_reason(self, app, target, says):
        form = self.form(target)
        assert not form.is_valid()
        assert says in " ".join(form.errors["target"])

    def test_a_telegram_bot_is_not_a_discord_bot(self, db):
        Integration.objects.create(kind=Integration.Kind.TELEGRAM, name="tg-bot")
        assert "no Discord integration named 'tg-bot'" in " ".join(
            self.form("tg-bot").errors["target"]
        )


def test_notify_test_sends_through_the_bot(discord, app, owner, capsys):
    linked(app, owner, ALICE)
    make_channel(name="dc")

    call_command("notify_test", "dc")

    assert "Sent to 'dc' (Discord bot)" in capsys.readouterr().out
    [message] = messages_to(discord, DM_CHANNEL)
    assert "works" in message["content"]
