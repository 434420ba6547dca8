"""The chat bots' commands: a registry by name, and the one dispatcher every
platform hands its messages to.

The core registers `/start`, `/link`, `/unlink` and `/help`; apps above it register
their own from their `AppConfig.ready()`, as they do everywhere else:

    register_command("status", status_reply, summary="What the system is doing now")

A handler gets a `CommandRequest` (the linked staff member, or None for a command
that does not need a link; the chat account; the arguments) and returns a `Reply`
or a string. Plain text is escaped for the chat; markup is built with `format_html`
(see `controlplane.chat_replies`). What a staff member may do from a chat is asked
the web's way: `request.user.has_perm(...)`.

Messages from accounts that are not linked (or whose staff account is no longer
staff) get one polite refusal and nothing else, except `/start` and `/link`.
Each chat account may send `CHATOPS_COMMANDS_PER_MINUTE` messages a minute; past
that it is told once to slow down, then ignored until the minute is over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from controlplane.chat_accounts import (
    ChatIdentity,
    LinkRefused,
    link_account,
    linked_account,
    unlink_account,
)
from controlplane.models import ChatAccount
from controlplane.tiers import StaffUser, is_staff_member

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Button:
    """A button under a reply; pressing it comes back as `data` (short: Telegram
    allows 64 bytes) to the button handler registered for its prefix."""

    label: str
    data: str


@dataclass(frozen=True)
class Reply:
    text: str
    buttons: tuple[tuple[Button, ...], ...] = ()


@dataclass(frozen=True)
class CommandRequest:
    identity: ChatIdentity
    account: ChatAccount | None
    user: StaffUser | None
    command: str
    args: str


Handler = Callable[[CommandRequest], Reply | str]


@dataclass(frozen=True)
class Command:
    name: str
    handler: Handler
    summary: str
    usage: str = ""
    needs_link: bool = True
    # Its answer may take longer than Discord waits for one (3 seconds): Discord is
    # answered "deferred" at once and the answer written when it is ready.
    slow: bool = False


_commands: dict[str, Command] = {}


def register_command(
    name: str,
    handler: Handler,
    *,
    summary: str,
    usage: str = "",
    needs_link: bool = True,
    slow: bool = False,
) -> None:
    _commands[name.lower()] = Command(name.lower(), handler, summary, usage, needs_link, slow)


def command_named(name: str) -> Command | None:
    return _commands.get(name.lower())


def registered_commands() -> list[Command]:
    return sorted(_commands.values(), key=lambda command: command.name)


REFUSAL = (
    "Hello! This bot answers the staff of the control plane only, and this account is "
    "not linked to a staff account. If you are staff: open your profile page on the "
    "control plane, get a link code, and send /link CODE here."
)
SLOW_DOWN = "Too many messages: wait a minute, then send your command again."
FAILED = "That command failed; the error is in the control plane's log."


def acting_member(account: ChatAccount | None) -> StaffUser | None:
    """The staff member a chat account acts for: none once they left the tiers."""
    if account is None or not is_staff_member(account.user):
        return None
    return account.user


def dispatch(identity: ChatIdentity, text: str) -> list[Reply]:
    """The replies to one message a person sent a bot (none when rate-limited)."""
    refused, first_refusal = _over_rate_limit(identity)
    if refused:
        return [Reply(SLOW_DOWN)] if first_refusal else []
    account = linked_account(identity)
    user = acting_member(account)
    name, args = parse_command(text)
    command = _commands.get(name) if name else None
    if command is None or (command.needs_link and user is None):
        if user is None:
            return [Reply(REFUSAL)]
        unknown = f"I do not know /{name}. " if name else ""
        return [Reply(unknown + short_help())]
    request = CommandRequest(identity, account, user, name, args)
    try:
        # A savepoint: a failed command takes back its own writes, nothing else.
        with transaction.atomic():
            reply = command.handler(request)
    except Exception:
        log.exception("chat command /%s failed", name)
        return [Reply(FAILED)]
    return [reply if isinstance(reply, Reply) else Reply(reply)]


def parse_command(text: str) -> tuple[str, str]:
    """("link", "ABCD-EFGH") from "/link ABCD-EFGH"; ("", "") when it is no command.
    A command addressed to a bot by name in a group ("/help@my_bot") loses the name."""
    text = (text or "").strip()
    if not text.startswith("/"):
        return "", ""
    word, _, args = text.partition(" ")
    name = word[1:].split("@", 1)[0].lower()
    if not name.isascii() or not name.replace("_", "").isalnum() or len(name) > 32:
        return "", ""
    return name, args.strip()


def short_help() -> str:
    return "Commands: " + ", ".join(f"/{c.name}" for c in registered_commands()) + "."


def current_minute() -> int:
    return int(time.time() // 60)


def _over_rate_limit(identity: ChatIdentity) -> tuple[bool, bool]:
    """(refused, first refusal this minute) for one more message from this account."""
    key = (
        f"chatops:messages:{identity.platform}:{identity.integration.pk}:"
        f"{identity.platform_user_id}:{current_minute()}"
    )
    cache.add(key, 0, timeout=120)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=120)
        count = 1
    limit = settings.CHATOPS_COMMANDS_PER_MINUTE
    return count > limit, count == limit + 1


@dataclass(frozen=True)
class ButtonPress:
    """A person pressed a button under one of the bot's messages."""

    identity: ChatIdentity
    account: ChatAccount | None
    user: StaffUser | None
    data: str
    message_id: str


# A button's handler answers with a short notice the person sees (a toast).
ButtonHandler = Callable[[ButtonPress], str]

_button_handlers: dict[str, ButtonHandler] = {}
STALE_BUTTON = "This button no longer works."


def register_button_handler(prefix: str, handler: ButtonHandler) -> None:
    """Buttons whose data starts with `prefix:` are handled by `handler`."""
    _button_handlers[prefix] = handler


def press_button(identity: ChatIdentity, data: str, message_id: str) -> str:
    """The notice for a pressed button; only linked staff reach a handler."""
    refused, first_refusal = _over_rate_limit(identity)
    if refused:
        return SLOW_DOWN if first_refusal else ""
    account = linked_account(identity)
    user = acting_member(account)
    if user is None:
        return "This account is not linked to a staff account: send /link CODE first."
    handler = _button_handlers.get(data.partition(":")[0])
    if handler is None:
        return STALE_BUTTON
    press = ButtonPress(identity, account, user, data, message_id)
    try:
        with transaction.atomic():
            return handler(press)
    except Exception:
        log.exception("chat button %s failed", data.partition(":")[0])
        return FAILED


# The core's own commands


def _start(request: CommandRequest) -> str:
    if request.args:  # a deep link (t.me/<bot>?start=CODE) carries the code
        return _link(request)
    if request.user is None:
        return REFUSAL
    return f"Hello {request.user.get_username()}. {short_help()}"


def _link(request: CommandRequest) -> str:
    if not request.args:
        return "Send /link followed by the code from your profile page, e.g. /link ABCD-EFGH."
    try:
        account = link_account(request.identity, request.args)
    except LinkRefused as exc:
        return str(exc)
    return (
        f"Linked: this chat account now acts for {account.user.get_username()}, with that "
        f"account's permissions. {short_help()}"
    )


def _unlink(request: CommandRequest) -> str:
    assert request.account is not None
    assert request.user is not None
    unlink_account(request.account, by=request.user, via="chat")
    return (
        f"Unlinked: this chat account no longer acts for {request.user.get_username()}. "
        "Get a new code on your profile page to link it again."
    )


def _help(request: CommandRequest) -> str:
    lines = [f"You act as {request.user.get_username() if request.user else '?'}."]
    for command in registered_commands():
        usage = f" {command.usage}" if command.usage else ""
        lines.append(f"/{command.name}{usage}: {command.summary}")
    return "\n".join(lines)


register_command("start", _start, summary="Say hello (and link, given a code)", needs_link=False)
register_command(
    "link", _link, summary="Link this chat to your staff account", usage="CODE", needs_link=False
)
register_command("unlink", _unlink, summary="Unlink this chat from your staff account")
register_command("help", _help, summary="What each command does")
