"""What the tests of Discord bot notification channels and approval buttons share: a
channel writing through the fake Discord API, the buttons of a posted message, and
pressing one as a Discord user does (a signed component interaction)."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.test import Client

from controlplane.models import Integration, NotificationChannel
from tests.controlplane.discord_bots import ALICE, button_press, post_interaction
from tests.discord_server import DiscordServer


def make_channel(target: str = "ops-discord", name: str = "ops-discord-dm") -> NotificationChannel:
    return NotificationChannel.objects.create(
        name=name, kind=NotificationChannel.Kind.DISCORD_BOT, target=target
    )


def buttons_of(message: dict[str, Any]) -> dict[str, str]:
    """{"Approve": custom_id, "Reject": custom_id} of a posted message (empty: none)."""
    return {
        button["label"]: button["custom_id"]
        for row in message.get("components") or []
        for button in row["components"]
    }


def messages_to(discord: DiscordServer, channel_id: str) -> list[dict[str, Any]]:
    posted = [m for m in discord.messages.values() if m["channel_id"] == channel_id]
    return sorted(posted, key=lambda m: int(m["id"]))


def edits_of(discord: DiscordServer, message: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in discord.edits if e["id"] == message["id"]]


def press(
    client: Client,
    integration: Integration,
    key: Ed25519PrivateKey,
    custom_id: str,
    message: dict[str, Any],
    *,
    user_id: str = ALICE,
    channel_id: str = "",
) -> Any:
    """Press a button under `message` as Discord user `user_id` (in the message's
    channel unless `channel_id`): the endpoint's response."""
    interaction = button_press(
        custom_id, message["id"], user_id=user_id, channel_id=channel_id or message["channel_id"]
    )
    return post_interaction(client, integration, key, interaction)


def notice(response: Any) -> str:
    """What a press answered the presser (an ephemeral message)."""
    assert response.status_code == 200, response.content
    answer = response.json()
    assert answer["type"] == 4, answer
    assert answer["data"]["flags"] == 64, answer
    return str(answer["data"]["content"])
