"""The bot messages the product writes on its own (approval notifications, a run's
message), the same way on every chat platform: send one, edit it, find a member's
direct chat.

What the product says is written once, as a chat reply (plain text, or markup built
with `format_html`, see `controlplane.chat_commands`) with `Button`s under it. A
`Messenger` turns that into the platform's message (Telegram's HTML and inline
keyboard; Discord's markdown and components), fits it into one message, and turns
the platform's failures into the few that callers act on: a rate limit with its
wait, an outage worth retrying, a message gone, anything else refused. So the
approvals' buttons, the notification channel and the run's message have one code
path for both platforms.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from controlplane import discord_integration, telegram_integration
from controlplane.chat_commands import Button
from controlplane.chat_replies import TELEGRAM_MESSAGE_LIMIT, as_markup, split_markup
from controlplane.discord import (
    DiscordAuthError,
    DiscordClient,
    DiscordError,
    DiscordNotFound,
    DiscordRateLimited,
    DiscordUnavailable,
)
from controlplane.discord_replies import components, message_text
from controlplane.models import ChatAccount, Integration
from controlplane.telegram import (
    InlineButton,
    TelegramAuthError,
    TelegramClient,
    TelegramError,
    TelegramRateLimited,
    TelegramUnavailable,
)

type Buttons = tuple[tuple[Button, ...], ...]


class ChatSendError(Exception):
    """The platform did not take the message; the text says what it answered (never
    the bot's token)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ChatRateLimited(ChatSendError):
    def __init__(self, message: str, status: int | None, retry_after: float) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after


class ChatUnavailable(ChatSendError):
    """Unreachable or 5xx: worth trying again later."""


class ChatAuthRefused(ChatSendError):
    """The bot's token is refused: the integration needs attention."""


class MessageGone(ChatSendError):
    """The message to edit is no longer there (deleted in the chat)."""


class Messenger(Protocol):
    platform: str

    def send(self, chat_id: str, text: str, buttons: Buttons = ()) -> str:
        """Post `text` (a reply) with `buttons`; the new message's id."""
        ...

    def edit(self, chat_id: str, message_id: str, text: str, buttons: Buttons = ()) -> None:
        """Replace a message's text; without `buttons` its buttons go."""
        ...

    def direct_chat(self, account: ChatAccount) -> str:
        """The chat in which the bot writes to that account alone."""
        ...


class TelegramMessenger:
    platform: str = ChatAccount.Platform.TELEGRAM

    def __init__(self, client: TelegramClient) -> None:
        self.client = client

    def send(self, chat_id: str, text: str, buttons: Buttons = ()) -> str:
        with _telegram_failures():
            sent = self.client.send_message(chat_id, _telegram(text), keyboard=_keyboard(buttons))
        return str(sent.get("message_id") or "")

    def edit(self, chat_id: str, message_id: str, text: str, buttons: Buttons = ()) -> None:
        try:
            with _telegram_failures():
                self.client.edit_message_text(
                    chat_id, int(message_id), _telegram(text), keyboard=_keyboard(buttons)
                )
        except ChatSendError as exc:
            if "message is not modified" not in str(exc):
                raise

    def direct_chat(self, account: ChatAccount) -> str:
        return account.chat_id  # linking happens in a private chat with the bot


class DiscordMessenger:
    platform: str = ChatAccount.Platform.DISCORD

    def __init__(self, client: DiscordClient) -> None:
        self.client = client

    def send(self, chat_id: str, text: str, buttons: Buttons = ()) -> str:
        with _discord_failures():
            sent = self.client.post_message(chat_id, message_text(text), components(buttons))
        return str(sent.get("id") or "")

    def edit(self, chat_id: str, message_id: str, text: str, buttons: Buttons = ()) -> None:
        with _discord_failures():
            self.client.edit_message(chat_id, message_id, message_text(text), components(buttons))

    def direct_chat(self, account: ChatAccount) -> str:
        # A member may have linked from a server's channel: notices go to their DMs.
        with _discord_failures():
            return self.client.open_direct_channel(account.platform_user_id)


@contextmanager
def messenger_for(integration: Integration) -> Iterator[Messenger]:
    """The bot of a Telegram or Discord integration, as a `Messenger`."""
    if integration.kind == Integration.Kind.DISCORD:
        with _discord_failures(), discord_integration.client_for(integration) as discord:
            yield DiscordMessenger(discord)
    elif integration.kind == Integration.Kind.TELEGRAM:
        with _telegram_failures(), telegram_integration.client_for(integration) as telegram:
            yield TelegramMessenger(telegram)
    else:
        raise ChatSendError(f"{integration.name} is not a chat bot's integration.")


def platform_label(platform: str) -> str:
    """ "Telegram", "Discord": how a platform is named to people."""
    labels = dict(ChatAccount.Platform.choices)
    return str(labels.get(platform, platform))


def _telegram(text: str) -> str:
    return split_markup(as_markup(text), TELEGRAM_MESSAGE_LIMIT, max_messages=1)[0]


def _keyboard(buttons: Buttons) -> tuple[tuple[InlineButton, ...], ...]:
    return tuple(tuple(InlineButton(b.label, b.data) for b in row) for row in buttons)


@contextmanager
def _telegram_failures() -> Iterator[None]:
    try:
        yield
    except TelegramRateLimited as exc:
        raise ChatRateLimited(str(exc), exc.status, float(exc.retry_after)) from None
    except TelegramUnavailable as exc:
        raise ChatUnavailable(str(exc), exc.status) from None
    except TelegramAuthError as exc:
        raise ChatAuthRefused(str(exc), exc.status) from None
    except TelegramError as exc:
        if "message to edit not found" in exc.description:
            raise MessageGone(str(exc), exc.status) from None
        raise ChatSendError(str(exc), exc.status) from None


@contextmanager
def _discord_failures() -> Iterator[None]:
    try:
        yield
    except DiscordRateLimited as exc:
        raise ChatRateLimited(str(exc), exc.status, exc.retry_after) from None
    except DiscordUnavailable as exc:
        raise ChatUnavailable(str(exc), exc.status) from None
    except DiscordAuthError as exc:
        raise ChatAuthRefused(str(exc), exc.status) from None
    except DiscordNotFound as exc:
        raise MessageGone(str(exc), exc.status) from None
    except DiscordError as exc:
        raise ChatSendError(str(exc), exc.status) from None
