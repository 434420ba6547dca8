"""The Telegram integration kind: a bot's token, the Bot API's URL and how updates
arrive, its connection test (`getMe`), and the webhook's registration.

Updates arrive one of two ways (the `updates` setting):

- `webhook`: Telegram POSTs each update to `SITE_URL` +
  `/integrations/telegram/<id>/webhook/`, carrying a secret the product generated
  (stored encrypted beside the token) in `X-Telegram-Bot-Api-Secret-Token`. Telegram
  only calls public HTTPS URLs, so `register_webhook` refuses any other `SITE_URL`.
- `polling` (the default, for installs without a public URL, such as the embedded
  mode): `controlplane.telegram_polling` asks `getUpdates`.

Declared from the control plane's `AppConfig.ready()`, as the client is in the core.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.urls import reverse

from controlplane.integrations import (
    ConnectionResult,
    IntegrationKind,
    SecretField,
    SettingField,
    declare_kind,
    register_connection_test,
    setting,
)
from controlplane.models import Integration
from controlplane.telegram import TELEGRAM_API_URL, TelegramClient, TelegramError

UPDATE_MODES = (
    ("polling", "Long polling (no public URL needed)"),
    ("webhook", "Webhook (needs a public HTTPS SITE_URL)"),
)
# The updates the product handles; Telegram sends no others.
ALLOWED_UPDATES = ["message", "edited_message", "callback_query"]
TOKEN_PATTERN = re.compile(r"^\d{3,20}:[A-Za-z0-9_-]{30,64}$")
WEBHOOK_SECRET = "webhook_secret"  # noqa: S105  (the name of the stored secret)


class WebhookNotPossible(Exception):
    """The webhook cannot be registered as things are set up; the message says why."""


def validate_telegram(secrets: Mapping[str, str], settings: Mapping[str, Any]) -> dict[str, str]:
    token = secrets.get("bot_token", "")
    if token and not TOKEN_PATTERN.match(token):
        return {
            "bot_token": "That is not a bot token: @BotFather gives one like "
            "123456789:AAH... (digits, a colon, then 35 letters, digits, - or _)."
        }
    return {}


TELEGRAM = declare_kind(
    IntegrationKind(
        kind=Integration.Kind.TELEGRAM,
        secrets=(
            SecretField(
                "bot_token",
                "Bot token",
                help_text="From @BotFather: /newbot, or /token for an existing bot.",
            ),
        ),
        settings=(
            SettingField(
                "updates",
                "Updates",
                default="polling",
                choices=UPDATE_MODES,
                help_text="Webhook: register it with 'bin/manage telegram_webhook NAME' or the "
                "list's action. Polling: the embedded mode polls in-process; otherwise run "
                "'bin/manage telegram_poll'.",
            ),
            SettingField(
                "api_url",
                "Bot API URL",
                default=TELEGRAM_API_URL,
                is_url=True,
                help_text="Telegram's, or a local Bot API server's.",
            ),
        ),
        validate=validate_telegram,
    )
)


def client_for(integration: Integration, **options: Any) -> TelegramClient:
    return TelegramClient(
        integration.secrets.get("bot_token", ""),
        api_url=str(setting(integration, "api_url") or TELEGRAM_API_URL),
        **options,
    )


def uses_webhook(integration: Integration) -> bool:
    return setting(integration, "updates") == "webhook"


def check_telegram_connection(integration: Integration, **options: Any) -> ConnectionResult:
    """The token works: `getMe` names the bot."""
    try:
        with client_for(integration, **options) as client:
            bot = client.get_me()
    except TelegramError as exc:
        return ConnectionResult(False, str(exc))
    username = str(bot.get("username") or "")
    if not bot.get("is_bot") or not username:
        return ConnectionResult(False, "Telegram's getMe answer does not describe a bot.")
    name = str(bot.get("first_name") or "")
    return ConnectionResult(True, f"Connected as @{username}" + (f" ({name})." if name else "."))


def webhook_url(integration: Integration) -> str:
    path = reverse("telegram_webhook", args=[integration.pk])
    return f"{settings.SITE_URL.rstrip('/')}{path}"


def webhook_secret(integration: Integration) -> str:
    """The secret every webhook request must carry, generated on first use."""
    stored = integration.secrets
    if not stored.get(WEBHOOK_SECRET):
        # Telegram accepts 1-256 characters of A-Z, a-z, 0-9, _ and -.
        integration.set_secrets({**stored, WEBHOOK_SECRET: secrets.token_urlsafe(48)})
        integration.save()
    return integration.secrets[WEBHOOK_SECRET]


def register_webhook(integration: Integration, **options: Any) -> str:
    """Tell Telegram to POST this bot's updates to the site; what was done."""
    if integration.kind != Integration.Kind.TELEGRAM:
        raise WebhookNotPossible(f"{integration.name} is not a Telegram integration.")
    if not uses_webhook(integration):
        raise WebhookNotPossible(
            f"{integration.name} takes its updates by long polling: set Updates to Webhook first."
        )
    url = webhook_url(integration)
    parts = urlsplit(url)
    if parts.scheme != "https" or parts.hostname in (None, "localhost", "127.0.0.1", "::1"):
        raise WebhookNotPossible(
            f"Telegram only calls public HTTPS URLs, and SITE_URL is {settings.SITE_URL}: "
            "set SITE_URL to the site's public https:// address, or use long polling."
        )
    with client_for(integration, **options) as client:
        client.set_webhook(url, webhook_secret(integration), ALLOWED_UPDATES)
    return f"Telegram now sends {integration.name}'s updates to {url}."


def remove_webhook(integration: Integration, **options: Any) -> str:
    with client_for(integration, **options) as client:
        client.delete_webhook()
    return f"Telegram no longer sends {integration.name}'s updates to a webhook."


def register() -> None:
    register_connection_test(Integration.Kind.TELEGRAM, check_telegram_connection)
