"""The Discord integration kind: an application's id and public key, its bot's token,
the API's URL; its connection test; and the registration of its slash commands.

Discord POSTs each interaction (a slash command, a button pressed) to the
application's Interactions Endpoint URL, `SITE_URL` +
`/integrations/discord/<id>/interactions/` (`controlplane.discord_interactions`),
signed with the application's key: the public key here is what verifies it. The bot
token is for the calls the product makes (commands, messages).

Declared from the control plane's `AppConfig.ready()`, as the client is in the core.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.urls import reverse

from controlplane.chat_commands import registered_commands
from controlplane.discord import DISCORD_API_URL, DiscordClient, DiscordError
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

PUBLIC_KEY_PATTERN = re.compile(r"^[0-9a-fA-F]{64}$")
SNOWFLAKE_PATTERN = re.compile(r"^[0-9]{5,20}$")
COMMAND_NAME_PATTERN = re.compile(r"^[a-z0-9_-]{1,32}$")
# Telegram's greeting; Discord has no such convention.
NOT_ON_DISCORD = {"start"}
# Where a command may be used: a server's channels and the bot's DMs.
CONTEXTS = [0, 1]
STRING_OPTION = 3


def validate_discord(secrets: Mapping[str, str], settings: Mapping[str, Any]) -> dict[str, str]:
    errors: dict[str, str] = {}
    if not PUBLIC_KEY_PATTERN.match(str(settings.get("public_key") or "").strip()):
        errors["public_key"] = (
            "That is not a public key: the Developer Portal shows it on your application's "
            "General Information page as 64 hexadecimal characters (32 bytes)."
        )
    if not SNOWFLAKE_PATTERN.match(str(settings.get("application_id") or "").strip()):
        errors["application_id"] = (
            "The application id is a number (General Information, Application ID)."
        )
    return errors


DISCORD = declare_kind(
    IntegrationKind(
        kind=Integration.Kind.DISCORD,
        secrets=(
            SecretField(
                "bot_token",
                "Bot token",
                help_text="From the Developer Portal: your application, Bot, Reset Token.",
            ),
        ),
        settings=(
            SettingField(
                "application_id",
                "Application id",
                help_text="General Information, Application ID.",
            ),
            SettingField(
                "public_key",
                "Public key",
                help_text="General Information, Public Key (64 hexadecimal characters): it "
                "verifies that interactions come from Discord.",
            ),
            SettingField(
                "api_url",
                "API URL",
                default=DISCORD_API_URL,
                is_url=True,
                help_text="Discord's HTTP API.",
            ),
        ),
        validate=validate_discord,
    )
)


def client_for(integration: Integration, **options: Any) -> DiscordClient:
    return DiscordClient(
        integration.secrets.get("bot_token", ""),
        api_url=str(setting(integration, "api_url") or DISCORD_API_URL),
        **options,
    )


def public_key(integration: Integration) -> str:
    return str(setting(integration, "public_key") or "").strip().lower()


def application_id(integration: Integration) -> str:
    return str(setting(integration, "application_id") or "").strip()


def check_discord_connection(integration: Integration, **options: Any) -> ConnectionResult:
    """The token works (`/users/@me` names the bot) and belongs to the application
    whose id and public key are set (`/applications/@me`)."""
    try:
        with client_for(integration, **options) as client:
            bot = client.get_bot_user()
            application = client.get_application()
    except DiscordError as exc:
        return ConnectionResult(False, str(exc))
    username = str(bot.get("username") or "")
    if not bot.get("bot") or not username:
        return ConnectionResult(False, "Discord's /users/@me answer does not describe a bot.")
    app_name = str(application.get("name") or "")
    if str(application.get("id") or "") != application_id(integration):
        return ConnectionResult(
            False,
            f"The bot {username} belongs to application {application.get('id')} "
            f"({app_name}), not to the application id set here.",
        )
    verify_key = str(application.get("verify_key") or "").lower()
    if verify_key and verify_key != public_key(integration):
        return ConnectionResult(
            False,
            f"Connected as {username}, but the public key set here is not application "
            f"{app_name}'s: interactions would all be refused. Copy it again from "
            "General Information.",
        )
    return ConnectionResult(
        True,
        f"Connected as {username} (application {app_name}). Its Interactions Endpoint URL "
        f"is {interactions_url(integration)}",
    )


def interactions_url(integration: Integration) -> str:
    path = reverse("discord_interactions", args=[integration.pk])
    return f"{settings.SITE_URL.rstrip('/')}{path}"


def slash_commands() -> list[dict[str, Any]]:
    """The application's commands: the chat commands registered in the core and the
    apps, each taking its arguments as one text option (`/link` its code)."""
    commands = []
    for command in registered_commands():
        if command.name in NOT_ON_DISCORD or not COMMAND_NAME_PATTERN.match(command.name):
            continue
        if command.name == "link":
            option = {
                "type": STRING_OPTION,
                "name": "code",
                "description": "The code from your profile page",
                "required": True,
            }
        else:
            option = {
                "type": STRING_OPTION,
                "name": "args",
                "description": (command.usage or "Arguments")[:100],
                "required": False,
            }
        commands.append(
            {
                "type": 1,
                "name": command.name,
                "description": (command.summary or command.name)[:100],
                "options": [option],
                "contexts": CONTEXTS,
            }
        )
    return commands


def register_commands(integration: Integration, **options: Any) -> str:
    """Replace the application's slash commands with the product's; what was done."""
    if integration.kind != Integration.Kind.DISCORD:
        raise DiscordError("not a Discord integration.")
    commands = slash_commands()
    with client_for(integration, **options) as client:
        client.set_commands(application_id(integration), commands)
    names = ", ".join(f"/{c['name']}" for c in commands)
    return f"Discord now offers {integration.name}'s commands: {names}."


def register() -> None:
    register_connection_test(Integration.Kind.DISCORD, check_discord_connection)
