"""What the Discord tests share: the fake Discord API, an application whose key pair
the test makes (Discord signs interactions with the private key; the integration
holds the public one), and ways to send the endpoint a signed interaction."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from itertools import count
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.test import Client

from controlplane.chat_accounts import ChatIdentity, issue_link_code, link_account
from controlplane.models import ChatAccount, Integration
from controlplane.tiers import StaffUser
from tests.discord_server import DiscordServer

TOKEN = "MTEwMDExMDAxMTAwMTEwMA.GhIjKl.secretpartOfTheDiscordBotToken0123"
TOKEN_PART = "secretpartOfTheDiscordBotToken"
APPLICATION_ID = "1100110011001100"
ALICE = "3300330033003300"  # a Discord user id
MALLORY = "6600660066006600"
DM_CHANNEL = "4400440044004400"
SERVER_CHANNEL = "5500550055005500"

_interaction_ids = count(7_000_000_000_000_000_001)


@pytest.fixture
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


@pytest.fixture
def discord(signing_key: Ed25519PrivateKey) -> Iterator[DiscordServer]:
    with DiscordServer() as server:
        server.add_bot(TOKEN, application_id=APPLICATION_ID, verify_key=public_hex(signing_key))
        yield server


def make_app(
    discord: DiscordServer, signing_key: Ed25519PrivateKey, name: str = "ops-discord"
) -> Integration:
    integration = Integration(kind=Integration.Kind.DISCORD, name=name)
    integration.set_secrets({"bot_token": TOKEN})
    integration.settings = {
        "api_url": discord.url,
        "application_id": APPLICATION_ID,
        "public_key": public_hex(signing_key),
    }
    integration.save()
    return integration


@pytest.fixture
def app(discord: DiscordServer, signing_key: Ed25519PrivateKey, db: Any) -> Integration:
    return make_app(discord, signing_key)


def interactions_path(integration: Integration) -> str:
    return f"/integrations/discord/{integration.pk}/interactions/"


def signed_headers(key: Ed25519PrivateKey, body: bytes, timestamp: int | None = None) -> dict:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = key.sign(stamp.encode() + body).hex()
    return {"X-Signature-Ed25519": signature, "X-Signature-Timestamp": stamp}


def post_interaction(
    client: Client,
    integration: Integration,
    key: Ed25519PrivateKey,
    interaction: Any,
    *,
    headers: dict[str, str] | None = None,
) -> Any:
    """POST an interaction to the endpoint, signed with `key` as Discord signs."""
    body = (
        interaction
        if isinstance(interaction, bytes)
        else (
            interaction.encode()
            if isinstance(interaction, str)
            else json.dumps(interaction).encode()
        )
    )
    return client.post(
        interactions_path(integration),
        body,
        content_type="application/json",
        headers=signed_headers(key, body) if headers is None else headers,
    )


def _user(user_id: str) -> dict[str, Any]:
    return {"id": user_id, "username": "alice", "global_name": "Alice", "discriminator": "0"}


def _where(user_id: str, in_server: bool, channel_id: str = "") -> dict[str, Any]:
    if in_server:
        return {
            "guild_id": "8800880088008800",
            "channel_id": channel_id or SERVER_CHANNEL,
            "member": {"user": _user(user_id), "roles": []},
        }
    return {"channel_id": channel_id or DM_CHANNEL, "user": _user(user_id)}


def command(
    name: str, value: str | None = None, *, user_id: str = ALICE, in_server: bool = False
) -> dict[str, Any]:
    """A slash command interaction, as Discord sends it."""
    option_name = "code" if name == "link" else "args"
    options = [] if value is None else [{"name": option_name, "type": 3, "value": value}]
    return {
        "id": str(next(_interaction_ids)),
        "application_id": APPLICATION_ID,
        "type": 2,
        "token": "interaction-token",
        "version": 1,
        "data": {"id": "1", "name": name, "type": 1, "options": options},
        **_where(user_id, in_server),
    }


def button_press(
    custom_id: str,
    message_id: str,
    *,
    user_id: str = ALICE,
    in_server: bool = False,
    channel_id: str = "",
) -> dict[str, Any]:
    """A button pressed under the bot's message `message_id` (in `channel_id`, else in
    the DM channel or the server channel)."""
    channel = channel_id or (SERVER_CHANNEL if in_server else DM_CHANNEL)
    return {
        "id": str(next(_interaction_ids)),
        "application_id": APPLICATION_ID,
        "type": 3,
        "token": "interaction-token",
        "version": 1,
        "data": {"custom_id": custom_id, "component_type": 2},
        "message": {"id": message_id, "channel_id": channel, "content": "..."},
        **_where(user_id, in_server, channel),
    }


def linked(
    integration: Integration, user: StaffUser, user_id: str = ALICE, chat_id: str = DM_CHANNEL
) -> ChatAccount:
    identity = ChatIdentity(integration, "discord", user_id, chat_id, "Alice")
    return link_account(identity, issue_link_code(user))
