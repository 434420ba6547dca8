"""Notification channels of kind Telegram bot, against the fake Bot API: whom they
write to, the delivery log, retries on Telegram's rate limit (honouring retry_after)
and outages, no chat written to twice by one delivery, de-duplication, the admin
form's validation and `notify_test`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from controlplane.admin import NotificationChannelForm
from controlplane.approvals import request_approval
from controlplane.models import ChatMessage, NotificationChannel, NotificationDelivery
from controlplane.notifications import notify, send_delivery
from tests.controlplane.telegram_bots import ALICE, MALLORY, bot, linked, telegram
from tests.controlplane.telegram_notices import buttons_of, make_channel, messages_to

__all__ = ["bot", "telegram"]  # fixtures

pytestmark = pytest.mark.django_db

BOB = 7002


def send(capture: Any, subject: str = "Budget at 90%", key: str = "budget:90") -> Any:
    with capture(execute=True):
        [delivery] = notify(subject, "routing spent <$90> of $100", dedupe_key=key)
    delivery.refresh_from_db()
    return delivery


def attempts(delivery: NotificationDelivery) -> list[tuple[int, bool, int | None]]:
    return [(a.number, a.ok, a.status_code) for a in delivery.attempt_log.order_by("number")]


def test_every_linked_staff_member_gets_the_notification(
    telegram, bot, operator, owner, outsider, django_capture_on_commit_callbacks
):
    linked(bot, operator, ALICE)
    linked(bot, owner, BOB)
    make_channel("ops-bot")

    delivery = send(django_capture_on_commit_callbacks)

    assert delivery.status == NotificationDelivery.Status.SENT
    assert attempts(delivery) == [(1, True, 200)]
    for chat in (ALICE, BOB):
        [message] = messages_to(telegram, chat)
        assert message["text"] == "<b>Budget at 90%</b>\nrouting spent &lt;$90&gt; of $100"
        assert message["parse_mode"] == "HTML"
        assert buttons_of(message) == {}
    assert ChatMessage.objects.filter(delivery=delivery).count() == 2


def test_an_audience_by_tier_and_a_chat_by_id(
    telegram, bot, observer, operator, owner, django_capture_on_commit_callbacks
):
    linked(bot, observer, MALLORY)
    linked(bot, operator, ALICE)
    linked(bot, owner, BOB)
    make_channel("ops-bot:owners", name="owners")
    make_channel("ops-bot:operators", name="operators")
    make_channel("ops-bot:chat:-1009876", name="group")

    with django_capture_on_commit_callbacks(execute=True):
        request_approval(action="test.tool", requested_by=operator, reason="please")

    assert len(messages_to(telegram, BOB)) == 2  # owners and operators
    assert len(messages_to(telegram, ALICE)) == 1  # operators
    assert messages_to(telegram, MALLORY) == []  # an observer is in neither
    [in_group] = messages_to(telegram, -1009876)
    assert "Approval needed: test.tool" in in_group["text"]
    # A group chat's message belongs to no one account: no buttons there.
    assert buttons_of(in_group) == {}
    assert all(set(buttons_of(m)) == {"Approve", "Reject"} for m in messages_to(telegram, BOB))


def test_a_member_who_left_the_tiers_hears_nothing(
    telegram, bot, operator, owner, django_capture_on_commit_callbacks
):
    linked(bot, operator, ALICE)
    linked(bot, owner, BOB)
    make_channel()
    operator.groups.clear()

    send(django_capture_on_commit_callbacks)

    assert messages_to(telegram, ALICE) == []
    assert len(messages_to(telegram, BOB)) == 1


def test_a_rate_limit_waits_its_retry_after_and_no_chat_gets_it_twice(
    telegram, bot, operator, owner, django_capture_on_commit_callbacks
):
    linked(bot, operator, ALICE)
    linked(bot, owner, BOB)
    make_channel()
    # Alice's message goes out; Bob's, the second request, meets a rate limit.
    original = telegram.answer
    limited: list[str] = []

    def answer(token: str, method: str, parameters: dict[str, Any]) -> Any:
        if method == "sendMessage" and str(parameters["chat_id"]) == str(BOB) and not limited:
            limited.append(method)
            return telegram.rate_limited(retry_after=40)
        return original(token, method, parameters)

    telegram.answer = answer
    before = timezone.now()

    delivery = send(django_capture_on_commit_callbacks)

    assert delivery.status == NotificationDelivery.Status.PENDING
    assert attempts(delivery) == [(1, False, 429)]
    assert "retry after 40" in delivery.last_error
    assert delivery.next_attempt_at >= before + timedelta(seconds=40)
    assert len(messages_to(telegram, ALICE)) == 1
    assert send_delivery(delivery.pk) is None  # not due before retry_after

    NotificationDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())
    send_delivery(delivery.pk)

    delivery.refresh_from_db()
    assert delivery.status == NotificationDelivery.Status.SENT
    assert attempts(delivery) == [(1, False, 429), (2, True, 200)]
    assert len(messages_to(telegram, ALICE)) == 1  # not written to twice
    assert len(messages_to(telegram, BOB)) == 1


def test_an_outage_leaves_the_delivery_retrying_until_telegram_is_back(
    telegram, bot, operator, django_capture_on_commit_callbacks
):
    linked(bot, operator, ALICE)
    make_channel()
    telegram.fail(telegram.outage(), telegram.outage())

    delivery = send(django_capture_on_commit_callbacks)

    # The tests' backoff base is 0 and the background runs at once: every retry ran.
    assert delivery.status == NotificationDelivery.Status.SENT
    assert attempts(delivery) == [(1, False, 502), (2, False, 502), (3, True, 200)]
    assert len(messages_to(telegram, ALICE)) == 1


def test_a_long_outage_fails_the_delivery_for_good_after_the_last_attempt(
    settings, telegram, bot, operator, django_capture_on_commit_callbacks
):
    settings.NOTIFY_MAX_ATTEMPTS = 3
    linked(bot, operator, ALICE)
    make_channel()
    telegram.fail(*[telegram.outage()] * 3)

    delivery = send(django_capture_on_commit_callbacks)

    assert delivery.status == NotificationDelivery.Status.FAILED
    assert [a[2] for a in attempts(delivery)] == [502, 502, 502]
    assert "try again later" in delivery.last_error
    assert messages_to(telegram, ALICE) == []


def test_the_same_condition_notifies_once_per_window(
    telegram, bot, operator, django_capture_on_commit_callbacks
):
    linked(bot, operator, ALICE)
    make_channel()

    send(django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        assert notify("Budget at 90%", "again", dedupe_key="budget:90") == []

    assert len(messages_to(telegram, ALICE)) == 1


def test_nobody_linked_fails_with_a_reason(telegram, bot, django_capture_on_commit_callbacks):
    make_channel()

    delivery = send(django_capture_on_commit_callbacks)

    assert delivery.status != NotificationDelivery.Status.SENT
    assert "no staff member linked a Telegram account to ops-bot" in delivery.last_error
    assert telegram.sent == []


def test_the_bot_token_never_reaches_the_delivery_log(
    telegram, bot, operator, django_capture_on_commit_callbacks
):
    linked(bot, operator, ALICE)
    make_channel()
    bot.settings = {**bot.settings, "api_url": "http://127.0.0.1:9"}  # nothing listens
    bot.save()

    delivery = send(django_capture_on_commit_callbacks)

    assert "Could not reach Telegram" in delivery.last_error
    texts = [delivery.last_error, *delivery.attempt_log.values_list("error", flat=True)]
    assert not any("secretpart" in text for text in texts)


class TestTheAdminForm:
    def form(self, target: str, kind: str = NotificationChannel.Kind.TELEGRAM) -> Any:
        return NotificationChannelForm(
            data={"name": "tg", "kind": kind, "target": target, "enabled": "on"}
        )

    def test_a_target_naming_a_bot_and_an_audience_is_accepted(self, bot):
        for target in ("ops-bot", "ops-bot:operators", "ops-bot:owners", "ops-bot:chat:-1001"):
            form = self.form(target)
            assert form.is_valid(), (target, form.errors)

    @pytest.mark.parametrize(
        ("target", "says"),
        [
            ("no-such-bot", "no Telegram integration named 'no-such-bot'"),
            ("ops-bot:everyone", "'everyone' is not whom"),
            ("ops-bot:chat:abc", "'abc' is not a Telegram chat id"),
            ("https://example.com/hook", "no Telegram integration named 'https'"),
        ],
    )
    def test_a_bad_target_is_refused_with_a_reason(self, bot, target, says):
        form = self.form(target)
        assert not form.is_valid()
        assert says in " ".join(form.errors["target"])

    def test_a_bot_of_another_kind_is_not_a_telegram_bot(self, db):
        from controlplane.models import Integration

        Integration.objects.create(kind=Integration.Kind.GITHUB, name="gh")
        assert "no Telegram integration named 'gh'" in " ".join(self.form("gh").errors["target"])


def test_notify_test_sends_through_the_bot(telegram, bot, owner, capsys):
    linked(bot, owner, ALICE)
    make_channel(name="tg")

    call_command("notify_test", "tg")

    assert "Sent to 'tg' (Telegram bot)" in capsys.readouterr().out
    [message] = messages_to(telegram, ALICE)
    assert "works" in message["text"]


def test_notify_test_says_why_it_failed(telegram, bot):
    make_channel(name="tg")
    with pytest.raises(CommandError, match="no staff member linked"):
        call_command("notify_test", "tg")
