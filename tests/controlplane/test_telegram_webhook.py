"""Telegram's webhook: refused without the right secret (and the refusal logged
without the body), never a 500 whatever arrives, each update handled once; and its
registration, which needs a public HTTPS SITE_URL."""

from __future__ import annotations

import logging

import pytest
from django.core.management import CommandError, call_command

from controlplane.models import ChatAccount, TelegramUpdate
from controlplane.telegram_integration import WEBHOOK_SECRET, webhook_url
from tests.controlplane.telegram_bots import (
    ALICE,
    TOKEN_PART,
    bot,
    hook_bot,
    linked,
    post_update,
    raw_credentials,
    say,
    telegram,
)

__all__ = ["bot", "hook_bot", "telegram"]  # fixtures

pytestmark = pytest.mark.django_db
BODY_MARKER = "private words nobody may log"


def _update(telegram, text=BODY_MARKER, **options):
    return telegram.update(telegram.message(ALICE, text, **options))


# The secret


def test_a_request_without_the_secret_is_refused_401_and_logged_without_its_body(
    client, telegram, hook_bot, caplog
):
    caplog.set_level(logging.INFO)

    response = post_update(client, hook_bot, _update(telegram), secret="")

    assert response.status_code == 401
    assert f"Telegram webhook {hook_bot.pk}: refused a request from 127.0.0.1: no secret" in (
        caplog.text
    )
    assert BODY_MARKER not in caplog.text
    assert telegram.sent == []
    assert not TelegramUpdate.objects.exists()


def test_a_wrong_secret_is_refused_403_and_logged_without_its_body(
    client, telegram, hook_bot, caplog
):
    caplog.set_level(logging.INFO)

    response = post_update(client, hook_bot, _update(telegram), secret="guessed-secret")

    assert response.status_code == 403
    assert "refused a request from 127.0.0.1: a wrong secret token" in caplog.text
    assert BODY_MARKER not in caplog.text
    assert "guessed-secret" not in caplog.text
    assert not TelegramUpdate.objects.exists()


def test_a_polling_bot_has_no_webhook_to_call(client, telegram, bot, hook_bot):
    # Even with another bot's right secret.
    response = post_update(client, bot, _update(telegram), secret=hook_bot.secrets[WEBHOOK_SECRET])

    assert response.status_code == 403


def test_an_unknown_bot_is_refused_like_a_wrong_secret(client, telegram, hook_bot):
    response = client.post(
        "/integrations/telegram/999999/webhook/",
        "{}",
        content_type="application/json",
        headers={"X-Telegram-Bot-Api-Secret-Token": hook_bot.secrets[WEBHOOK_SECRET]},
    )

    assert response.status_code == 403


def test_the_webhook_takes_only_a_post(client, hook_bot):
    assert client.get(f"/integrations/telegram/{hook_bot.pk}/webhook/").status_code == 405


# Whatever arrives: never a 500


def test_a_body_that_is_not_json_is_a_400(client, hook_bot):
    assert post_update(client, hook_bot, "{not json").status_code == 400
    assert post_update(client, hook_bot, b"\xff\xfe").status_code == 400


@pytest.mark.parametrize(
    "update",
    [
        [],
        '"a string"',
        None,
        {},
        {"update_id": "12"},
        {"update_id": 10**20, "message": {}},
        {"update_id": -1},
        {"update_id": True},
        {"update_id": 5, "message": "text"},
        {"update_id": 6, "message": {"chat": {"id": 1}}},
        {"update_id": 7, "message": {"chat": {"id": "x"}, "from": {"id": 2}, "text": "/help"}},
        {"update_id": 8, "message": {"chat": [], "from": {"id": 2}, "text": "/help"}},
        {"update_id": 9, "channel_post": {"text": "hi"}},
        {"update_id": 10, "callback_query": {"id": 3}},
        {"update_id": 11, "callback_query": {"id": "q1", "data": "approval:1"}},
    ],
)
def test_malformed_updates_are_answered_200_and_ignored(client, telegram, hook_bot, update):
    response = post_update(client, hook_bot, update)

    assert response.status_code == 200
    assert response.json()["ok"] is True
    assert response.json()["outcome"].startswith("ignored")
    assert telegram.sent == []


def test_an_edited_message_runs_nothing_again(client, telegram, hook_bot, owner):
    linked(hook_bot, owner)

    response = post_update(client, hook_bot, _update(telegram, "/unlink", edited=True))

    assert response.json()["outcome"] == "ignored: an edited message"
    assert telegram.sent == []
    assert ChatAccount.objects.filter(user=owner).exists()


def test_a_huge_message_is_answered_within_telegrams_limit(client, telegram, hook_bot, owner):
    linked(hook_bot, owner)

    replies = say(client, telegram, hook_bot, "/" + "x" * 30 + " " + "<b>&" * 50_000)

    assert replies  # a short help (an unknown command), never an error
    assert all(len(text) <= 4096 for text in replies)


def test_a_retried_update_is_handled_once(client, telegram, hook_bot, owner):
    linked(hook_bot, owner)
    update = _update(telegram, "/help")

    first = post_update(client, hook_bot, update)
    again = post_update(client, hook_bot, update)

    assert first.json()["outcome"] == "answered (1 replies)"
    assert again.json()["outcome"] == "duplicate"
    assert len(telegram.sent) == 1


def test_a_command_in_a_group_chat_is_sent_to_a_private_chat(client, telegram, hook_bot, owner):
    linked(hook_bot, owner)

    replies = say(client, telegram, hook_bot, "/unlink", chat_id=-100123, chat_type="supergroup")

    assert replies == ["I take commands in a private chat only: write to me directly."]
    assert ChatAccount.objects.filter(user=owner).exists()


def test_a_reply_telegram_refuses_leaves_the_update_handled_and_the_error_shown(
    client, telegram, hook_bot, owner
):
    linked(hook_bot, owner)
    telegram.fail(telegram.rate_limited(retry_after=3))

    response = post_update(client, hook_bot, _update(telegram, "/help"))

    assert response.status_code == 200
    hook_bot.refresh_from_db()
    assert "A reply was not sent: Telegram's rate limit was reached (sendMessage)" in (
        hook_bot.last_error
    )


# Registering the webhook


def test_registering_needs_a_public_https_site_url(telegram, hook_bot, settings):
    settings.SITE_URL = "http://127.0.0.1:8000"

    with pytest.raises(CommandError, match="Telegram only calls public HTTPS URLs"):
        call_command("telegram_webhook", hook_bot.name)

    assert telegram.webhook is None


def test_registering_sets_the_webhook_with_the_stored_secret(telegram, hook_bot, settings):
    settings.SITE_URL = "https://ops.example.com"

    call_command("telegram_webhook", hook_bot.name)

    secret = hook_bot.secrets[WEBHOOK_SECRET]
    assert telegram.webhook == {
        "url": f"https://ops.example.com/integrations/telegram/{hook_bot.pk}/webhook/",
        "secret_token": secret,
        "allowed_updates": ["message", "edited_message", "callback_query"],
    }
    assert len(secret) >= 32
    assert secret not in raw_credentials(hook_bot)
    assert TOKEN_PART not in raw_credentials(hook_bot)
    assert webhook_url(hook_bot) == telegram.webhook["url"]


def test_a_polling_bot_is_not_given_a_webhook(telegram, bot, settings):
    settings.SITE_URL = "https://ops.example.com"

    with pytest.raises(CommandError, match="takes its updates by long polling"):
        call_command("telegram_webhook", bot.name)


def test_the_webhook_is_removed_to_poll_again(telegram, hook_bot, settings):
    settings.SITE_URL = "https://ops.example.com"
    call_command("telegram_webhook", hook_bot.name)

    call_command("telegram_webhook", hook_bot.name, "--delete")

    assert telegram.webhook is None


def test_the_admin_action_registers_the_webhook(client, owner, telegram, hook_bot, settings):
    settings.SITE_URL = "https://ops.example.com"
    client.force_login(owner)

    response = client.post(
        "/admin/controlplane/integration/",
        {"action": "register_telegram_webhook", "_selected_action": [hook_bot.pk], "index": "0"},
        follow=True,
    )

    assert "Telegram now sends hook-bot&#x27;s updates to https://ops.example.com" in (
        response.content.decode()
    )
    assert telegram.webhook is not None
