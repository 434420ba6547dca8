"""Handling one Telegram update, whether it came by webhook or by long polling.

Each update is recorded by its `update_id` (`TelegramUpdate`, unique per bot) in the
same transaction as its effects (a link made, a command's writes): an update handled
once is never handled again (a webhook retried, a poll repeated after a restart, two
pollers), and one whose handling did not commit is not recorded, so polling fetches
it again. Replies are sent once that transaction has committed (so it is called
outside any transaction): a crash between the commit and the send loses the reply,
never repeats the command.

An update that cannot be handled (malformed, or a bug) is logged and recorded as
failed, so it never blocks the updates behind it. Edited messages are ignored: an
edit does not run a command again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction

from controlplane.chat_accounts import ChatIdentity
from controlplane.chat_commands import Button, Reply, dispatch, press_button
from controlplane.chat_replies import TELEGRAM_MESSAGE_LIMIT, as_markup, split_markup
from controlplane.models import ChatAccount, Integration, TelegramUpdate
from controlplane.telegram import InlineButton, Keyboard, TelegramClient, TelegramError

log = logging.getLogger(__name__)

# update_id is stored in a 64-bit column.
MAX_UPDATE_ID = 2**63
GROUP_CHAT = "I take commands in a private chat only: write to me directly."


@dataclass(frozen=True)
class Outgoing:
    """A call to the Bot API to make once the update's transaction has committed."""

    chat_id: str = ""
    text: str = ""
    keyboard: Keyboard = ()
    callback_query_id: str = ""


class Ignored(Exception):
    """The update is not one to act on; the message says why (kept as its outcome)."""


def handle_update(integration: Integration, update: Any, client: TelegramClient) -> str:
    """Handle one update (a parsed JSON value) and return its outcome in a few words."""
    update_id = update.get("update_id") if isinstance(update, dict) else None
    if type(update_id) is not int or not 0 <= update_id < MAX_UPDATE_ID:
        log.warning(
            "Telegram integration %s: ignored an update without an update_id", integration.pk
        )
        return "ignored: not an update"
    kind = next((key for key in update if key != "update_id"), "")[:40]
    outbox: list[Outgoing] = []
    try:
        # Durable: the replies below go out only once the update's effects are committed.
        with transaction.atomic(durable=True):
            try:
                with transaction.atomic():
                    record = TelegramUpdate.objects.create(
                        integration=integration, update_id=update_id, kind=kind
                    )
            except IntegrityError:
                return "duplicate"
            try:
                outcome = _handle(integration, kind, update.get(kind), outbox)
            except Ignored as exc:
                outcome = f"ignored: {exc}"
            record.outcome = outcome[:200]
            record.save(update_fields=["outcome"])
    except Exception:
        log.exception("Telegram integration %s: update %s failed", integration.pk, update_id)
        outbox.clear()
        with transaction.atomic():
            TelegramUpdate.objects.get_or_create(
                integration=integration,
                update_id=update_id,
                defaults={"kind": kind, "outcome": "failed"},
            )
        return "failed"
    send(integration, client, outbox)
    return outcome


def _handle(integration: Integration, kind: str, body: Any, outbox: list[Outgoing]) -> str:
    if kind == "edited_message":
        raise Ignored("an edited message")
    if kind == "callback_query":
        return _button(integration, body, outbox)
    if kind != "message":
        raise Ignored(f"a {kind or 'empty'} update")
    identity, text = _sender(integration, body)
    if body["chat"].get("type") != "private":
        if text.startswith("/"):
            outbox.append(Outgoing(identity.chat_id, GROUP_CHAT))
        raise Ignored("a group chat")
    replies = dispatch(identity, text)
    for reply in replies:
        outbox.extend(_messages(identity.chat_id, reply))
    return f"answered ({len(replies)} replies)" if replies else "answered nothing (rate limit)"


def _sender(integration: Integration, message: Any) -> tuple[ChatIdentity, str]:
    if not isinstance(message, dict):
        raise Ignored("a message that is not an object")
    chat, sender = message.get("chat"), message.get("from")
    if not isinstance(chat, dict) or not isinstance(sender, dict):
        raise Ignored("a message without its chat or sender")
    if type(chat.get("id")) is not int or type(sender.get("id")) is not int:
        raise Ignored("a message whose chat or sender has no id")
    if sender.get("is_bot"):
        raise Ignored("a message from a bot")
    text = message.get("text")
    names = [sender.get("username"), sender.get("first_name"), sender.get("last_name")]
    # PostgreSQL's text refuses NUL, and a name is only shown.
    display = " ".join(part for part in names if isinstance(part, str) and part).replace("\x00", "")
    identity = ChatIdentity(
        integration=integration,
        platform=ChatAccount.Platform.TELEGRAM,
        platform_user_id=str(sender["id"]),
        chat_id=str(chat["id"]),
        display_name=display[:200],
    )
    return identity, text if isinstance(text, str) else ""


def _button(integration: Integration, query: Any, outbox: list[Outgoing]) -> str:
    if not isinstance(query, dict) or not isinstance(query.get("id"), str):
        raise Ignored("a callback query without an id")
    message = query.get("message")
    if not isinstance(message, dict) or not isinstance(message.get("chat"), dict):
        outbox.append(Outgoing(callback_query_id=query["id"], text="This button no longer works."))
        raise Ignored("a callback query without its message")
    identity, _ = _sender(integration, {**message, "from": query.get("from"), "text": ""})
    data = query.get("data")
    notice = press_button(
        identity, data if isinstance(data, str) else "", str(message.get("message_id"))
    )
    outbox.append(Outgoing(callback_query_id=query["id"], text=notice))
    return "button answered"


def _messages(chat_id: str, reply: Reply) -> list[Outgoing]:
    parts = split_markup(as_markup(reply.text), TELEGRAM_MESSAGE_LIMIT)
    keyboard = _keyboard(reply.buttons)
    # The buttons go under the last part, where the person reads to.
    return [
        Outgoing(chat_id, part, keyboard if index == len(parts) - 1 else ())
        for index, part in enumerate(parts)
    ]


def _keyboard(buttons: tuple[tuple[Button, ...], ...]) -> Keyboard:
    return tuple(tuple(InlineButton(b.label, b.data) for b in row) for row in buttons)


def send(integration: Integration, client: TelegramClient, outbox: list[Outgoing]) -> None:
    """Make the calls; a failure is logged and shown on the integration, never raised
    (the update is handled; a chat reply is not worth a retry loop)."""
    for outgoing in outbox:
        try:
            if outgoing.callback_query_id:
                client.answer_callback_query(outgoing.callback_query_id, outgoing.text)
            else:
                client.send_message(outgoing.chat_id, outgoing.text, keyboard=outgoing.keyboard)
        except TelegramError as exc:
            log.warning("Telegram integration %s: a reply was not sent: %s", integration.pk, exc)
            integration.record_error(f"A reply was not sent: {exc}")
            return
