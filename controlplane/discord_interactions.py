"""The endpoint Discord POSTs an application's interactions to (its Interactions
Endpoint URL, `/integrations/discord/<id>/interactions/`): a PING when the URL is
saved in the Developer Portal, a slash command, a button pressed.

Every request must be signed with the application's key: an Ed25519 signature
(`X-Signature-Ed25519`) of the timestamp (`X-Signature-Timestamp`) followed by the
raw body, verified with the integration's public key. A missing or bad signature is
refused with 401 (Discord itself sends such requests to check that the endpoint
refuses them) and logged without the body. A request signed more than
`DISCORD_INTERACTION_MAX_AGE_SECONDS` ago is refused too, and each interaction's id
is accepted once within that time: a captured request cannot be replayed.

A slash command goes through the same dispatcher as Telegram's messages
(`controlplane.chat_commands`: the linked staff member, the rate limit, the polite
refusal) and is answered in the response itself (type 4). Discord waits 3 seconds
for that response: a command registered as `slow` (`/run`, `/status`) from a linked
member is answered "deferred" at once (type 5, Discord shows "thinking...") and run
in the background, which then writes the answer into that response through the
interaction's webhook (`PATCH /webhooks/<application>/<token>/messages/@original`),
or deletes it when the command's answer is a message of its own (a run's). Whatever an account that
is not linked is told, and anything said in a server's channel, is ephemeral: only
the person who asked sees it. A button pressed reaches the handler registered for
its custom_id's prefix (`register_button_handler`), with the presser's Discord user
id (`press.identity.platform_user_id`) and the message's id (`press.message_id`).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from controlplane.background import enqueue
from controlplane.chat_accounts import ChatIdentity, linked_account
from controlplane.chat_commands import (
    FAILED,
    REFUSAL,
    SLOW_DOWN,
    Reply,
    acting_member,
    command_named,
    dispatch,
    press_button,
)
from controlplane.discord import NO_MENTIONS, DiscordError
from controlplane.discord_integration import application_id, client_for, public_key
from controlplane.discord_replies import components, message_text, truncated
from controlplane.middleware import client_address
from controlplane.models import ChatAccount, Integration

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Signature-Ed25519"
TIMESTAMP_HEADER = "X-Signature-Timestamp"

# Interaction types (Discord's numbers) and the response types used.
PING = 1
APPLICATION_COMMAND = 2
MESSAGE_COMPONENT = 3
PONG = 1
CHANNEL_MESSAGE = 4
DEFERRED_CHANNEL_MESSAGE = 5
DEFERRED_UPDATE_MESSAGE = 6
EPHEMERAL = 64
NOT_HANDLED = "I do not handle that kind of interaction."


class Malformed(Exception):
    """A signed interaction without what it should hold; the message says what."""


@csrf_exempt  # Discord's request: authenticated by its signature, not a session
@require_POST
def discord_interactions(request: HttpRequest, integration_id: int) -> HttpResponse:
    signature = request.headers.get(SIGNATURE_HEADER, "")
    timestamp = request.headers.get(TIMESTAMP_HEADER, "")
    if not signature or not timestamp:
        return _refused(request, integration_id, "no signature")
    integration = Integration.objects.filter(
        pk=integration_id, kind=Integration.Kind.DISCORD, enabled=True
    ).first()
    if integration is None:
        return _refused(request, integration_id, "no such Discord integration")
    body = request.body
    why = _unverified(integration, signature, timestamp, body)
    if why:
        return _refused(request, integration_id, why)
    try:
        interaction = json.loads(body)
    except ValueError:  # UnicodeDecodeError included
        log.warning("Discord interactions %s: a body that is not JSON was refused", integration_id)
        return JsonResponse({"error": "The body is not JSON."}, status=400)
    if not isinstance(interaction, dict) or not isinstance(interaction.get("id"), str):
        return JsonResponse({"error": "The body is not an interaction."}, status=400)
    if not cache.add(
        f"discord:interaction:{integration.pk}:{interaction['id'][:40]}",
        1,
        timeout=2 * settings.DISCORD_INTERACTION_MAX_AGE_SECONDS,
    ):
        return _refused(request, integration_id, "an interaction already answered (a replay)")
    try:
        return JsonResponse(respond(integration, interaction))
    except Malformed as exc:
        log.warning("Discord interactions %s: %s", integration_id, exc)
        return JsonResponse({"error": str(exc)}, status=400)


def _unverified(integration: Integration, signature: str, timestamp: str, body: bytes) -> str:
    """Why the request is not Discord's, fresh; "" when it is."""
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key(integration)))
    except ValueError:
        return "the integration's public key is not a valid Ed25519 key"
    try:
        key.verify(bytes.fromhex(signature), timestamp.encode() + body)
    except (ValueError, InvalidSignature):
        return "a bad signature"
    if not (timestamp.isascii() and timestamp.isdigit()):
        return "a timestamp that is not a number"
    if abs(time.time() - int(timestamp)) > settings.DISCORD_INTERACTION_MAX_AGE_SECONDS:
        return "a stale timestamp"
    return ""


def _refused(request: HttpRequest, integration_id: int, why: str) -> HttpResponse:
    log.warning(
        "Discord interactions %s: refused a request from %s: %s",
        integration_id,
        client_address(request),
        why,
    )
    return JsonResponse({"error": "The request's signature is missing or wrong."}, status=401)


def respond(integration: Integration, interaction: dict[str, Any]) -> dict[str, Any]:
    """The interaction response (Discord's JSON) to one verified interaction."""
    kind = interaction.get("type")
    if kind == PING:
        return {"type": PONG}
    if kind not in (APPLICATION_COMMAND, MESSAGE_COMPONENT):
        return _message(message_text(NOT_HANDLED), ephemeral=True)
    identity = _sender(integration, interaction)
    data = interaction.get("data")
    if not isinstance(data, dict):
        raise Malformed("an interaction without its data")
    try:
        # A savepoint: a failure takes back this interaction's writes, nothing else.
        with transaction.atomic():
            if kind == APPLICATION_COMMAND:
                token = interaction.get("token")
                return _command(
                    identity,
                    data,
                    in_server="guild_id" in interaction,
                    token=token if isinstance(token, str) else "",
                )
            return _button(identity, data, interaction.get("message"))
    except Malformed:
        raise
    except Exception:
        log.exception("Discord interactions %s: an interaction failed", integration.pk)
        return _message(message_text(FAILED), ephemeral=True)


def _sender(integration: Integration, interaction: dict[str, Any]) -> ChatIdentity:
    # In a server the person is the member's user; in a DM, `user`.
    member = interaction.get("member")
    user = member.get("user") if isinstance(member, dict) else interaction.get("user")
    if not isinstance(user, dict) or not _is_id(user.get("id")):
        raise Malformed("an interaction without the user who sent it")
    channel = interaction.get("channel")
    channel_id = interaction.get("channel_id") or (
        channel.get("id") if isinstance(channel, dict) else None
    )
    if not _is_id(channel_id):
        raise Malformed("an interaction without its channel")
    names = [user.get("global_name"), user.get("username")]
    display = next((n for n in names if isinstance(n, str) and n), "").replace("\x00", "")
    return ChatIdentity(
        integration=integration,
        platform=ChatAccount.Platform.DISCORD,
        platform_user_id=str(user["id"]),
        chat_id=str(channel_id),
        display_name=display[:200],
    )


def _command(
    identity: ChatIdentity, data: dict[str, Any], *, in_server: bool, token: str
) -> dict[str, Any]:
    name = data.get("name")
    if not isinstance(name, str):
        raise Malformed("a command without its name")
    options = data.get("options")
    values = [
        str(option["value"])
        for option in (options if isinstance(options, list) else [])
        if isinstance(option, dict) and isinstance(option.get("value"), (str, int, float))
    ]
    text = " ".join([f"/{name}", *values])
    command = command_named(name)
    slow = command is not None and command.slow and bool(token)
    if slow and acting_member(linked_account(identity)) is not None:
        _answer_later(identity, text, token, in_server=in_server)
        return {
            "type": DEFERRED_CHANNEL_MESSAGE,
            "data": {"flags": EPHEMERAL} if in_server else {},
        }
    answer = command_answer(identity, text, in_server=in_server)
    return {"type": CHANNEL_MESSAGE, "data": answer or _data(message_text("Done."), True)}


def command_answer(identity: ChatIdentity, text: str, *, in_server: bool) -> dict[str, Any] | None:
    """The message (Discord's `data`) answering a command; None when the command said
    nothing (its answer is a message of its own)."""
    replies = dispatch(identity, text)
    if not replies:  # past the rate limit: Discord wants an answer all the same
        replies = [Reply(SLOW_DOWN)]
    said = [reply for reply in replies if reply.text.strip()]
    if not said:
        return None
    content = "\n\n".join(message_text(reply.text) for reply in said)
    buttons = next((r.buttons for r in reversed(said) if r.buttons), ())
    refused = any(reply.text in (REFUSAL, SLOW_DOWN, FAILED) for reply in said)
    unlinked = acting_member(linked_account(identity)) is None
    return _data(truncated(content), in_server or refused or unlinked, buttons)


def _answer_later(identity: ChatIdentity, text: str, token: str, *, in_server: bool) -> None:
    from controlplane.tasks import answer_discord_command

    enqueue(
        answer_discord_command,
        identity.integration.pk,
        {
            "platform_user_id": identity.platform_user_id,
            "chat_id": identity.chat_id,
            "display_name": identity.display_name,
        },
        text,
        token,
        in_server,
    )


def answer_deferred(
    integration_id: int, sender: dict[str, str], text: str, token: str, in_server: bool
) -> None:
    """Run a command answered "deferred" and write its answer into the interaction's
    response (or delete that response when the command answered with a message of
    its own). Within the interaction token's 15 minutes."""
    integration = Integration.objects.filter(
        pk=integration_id, kind=Integration.Kind.DISCORD, enabled=True
    ).first()
    if integration is None:
        log.warning("Discord interactions %s: gone or disabled before its answer", integration_id)
        return
    identity = ChatIdentity(
        integration=integration,
        platform=ChatAccount.Platform.DISCORD,
        platform_user_id=sender["platform_user_id"],
        chat_id=sender["chat_id"],
        display_name=sender["display_name"],
    )
    answer = command_answer(identity, text, in_server=in_server)
    try:
        with client_for(integration) as client:
            if answer is None:
                client.delete_original_response(application_id(integration), token)
            else:
                client.edit_original_response(
                    application_id(integration),
                    token,
                    answer["content"],
                    answer.get("components"),
                )
    except DiscordError as exc:
        log.warning(
            "Discord interactions %s: a deferred answer was not written: %s", integration_id, exc
        )


def _button(identity: ChatIdentity, data: dict[str, Any], message: Any) -> dict[str, Any]:
    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str) or not isinstance(message, dict):
        raise Malformed("a button press without its custom_id or message")
    if not _is_id(message.get("id")):
        raise Malformed("a button press whose message has no id")
    notice = press_button(identity, custom_id, str(message["id"]))
    if not notice:  # past the rate limit: acknowledged, nothing said
        return {"type": DEFERRED_UPDATE_MESSAGE}
    return _message(message_text(notice), ephemeral=True)


def _message(content: str, *, ephemeral: bool) -> dict[str, Any]:
    return {"type": CHANNEL_MESSAGE, "data": _data(content, ephemeral)}


def _data(
    content: str, ephemeral: bool, reply_buttons: tuple[tuple[Any, ...], ...] = ()
) -> dict[str, Any]:
    data: dict[str, Any] = {"content": content, "allowed_mentions": NO_MENTIONS}
    if ephemeral:
        data["flags"] = EPHEMERAL
    if reply_buttons:
        data["components"] = components(reply_buttons)
    return data


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20
