"""What the Telegram tests share: the fake Bot API, bots set up against it (one
polling, one taking webhooks), and ways to send a bot a message either way."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from controlplane.chat_accounts import ChatIdentity, issue_link_code, link_account
from controlplane.models import ChatAccount, Integration
from controlplane.telegram_integration import WEBHOOK_SECRET, webhook_secret
from controlplane.telegram_polling import poll_once
from controlplane.tiers import StaffUser
from tests.telegram_server import TelegramServer

TOKEN = "123456789:AAHsecretpartOfTheBotToken012345678"
TOKEN_PART = "secretpartOfTheBotToken"
ALICE = 7001  # a Telegram user id
MALLORY = 7666


@pytest.fixture
def telegram() -> Iterator[TelegramServer]:
    with TelegramServer() as server:
        server.add_bot(TOKEN, username="ops_bot", first_name="Ops")
        yield server


def make_bot(
    telegram: TelegramServer, name: str = "ops-bot", updates: str = "polling"
) -> Integration:
    integration = Integration(kind=Integration.Kind.TELEGRAM, name=name)
    integration.set_secrets({"bot_token": TOKEN})
    integration.settings = {"api_url": telegram.url, "updates": updates}
    integration.save()
    return integration


@pytest.fixture
def bot(telegram: TelegramServer, db: Any) -> Integration:
    return make_bot(telegram)


@pytest.fixture
def hook_bot(telegram: TelegramServer, db: Any) -> Integration:
    integration = make_bot(telegram, name="hook-bot", updates="webhook")
    webhook_secret(integration)
    return integration


def webhook_path(integration: Integration) -> str:
    return f"/integrations/telegram/{integration.pk}/webhook/"


def post_update(
    client: Client, integration: Integration, update: Any, secret: str | None = None
) -> Any:
    """POST an update to the bot's webhook, as Telegram does (with its secret)."""
    if secret is None:
        secret = integration.secrets[WEBHOOK_SECRET]
    headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret else {}
    body = update if isinstance(update, (str, bytes)) else json.dumps(update)
    return client.post(
        webhook_path(integration), body, content_type="application/json", headers=headers
    )


def say(
    client: Client,
    telegram: TelegramServer,
    integration: Integration,
    text: str,
    user_id: int = ALICE,
    **options: Any,
) -> list[str]:
    """Send the bot `text` from `user_id` through the webhook; the texts it sent back."""
    before = len(telegram.sent)
    response = post_update(
        client, integration, telegram.update(telegram.message(user_id, text, **options))
    )
    assert response.status_code == 200, response.content
    return [m["text"] for m in telegram.sent[before:]]


def poll(
    telegram: TelegramServer, integration: Integration, text: str, user_id: int = ALICE
) -> list[str]:
    """Send the bot `text` from `user_id` and let it poll once; the texts it sent back."""
    before = len(telegram.sent)
    telegram.queue(telegram.message(user_id, text))
    poll_once(integration, timeout=0)
    return [m["text"] for m in telegram.sent[before:]]


def linked(integration: Integration, user: StaffUser, user_id: int = ALICE) -> ChatAccount:
    identity = ChatIdentity(integration, "telegram", str(user_id), str(user_id), "alice")
    return link_account(identity, issue_link_code(user))


def raw_credentials(integration: Integration) -> str:
    """The stored column, as the database holds it (encrypted)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT credentials FROM controlplane_integration WHERE id = %s", [integration.pk]
        )
        return str(cursor.fetchone()[0])
