"""Notification channels of kind Telegram bot: notifications written by a Telegram
integration's bot to staff members' chats, with the delivery log, retries, backoff
and de-duplication of every channel (`controlplane.notifications`).

A channel's target names the bot (a Telegram integration) and whom it writes to:

- `ops-bot`: every staff member who linked a Telegram account to that bot;
- `ops-bot:operators`: those of the Operator tier or above (who decide approvals);
- `ops-bot:owners`: Owners only;
- `ops-bot:chat:-1001234567890`: one chat by its id (a group the bot is in).

An approval's notification to a staff member's chat carries Approve and Reject
buttons (`controlplane.chat_approvals`); a chat given by id gets it without buttons,
since a button there would not belong to one account.

One delivery writes to each recipient once: each message sent is recorded
(`TelegramMessage`, by delivery and chat), and a retry skips the chats it reached.
Telegram's rate limit (429) fails the attempt with its `retry_after`, which the
delivery's next attempt honours; an outage (5xx, unreachable) fails it for the usual
backoff, so deliveries keep retrying while Telegram is down.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import cast

from django.db import IntegrityError, transaction
from django.utils.html import format_html

from controlplane.chat_approvals import approval_message, approval_of, new_buttons, token_hash
from controlplane.chat_replies import TELEGRAM_MESSAGE_LIMIT, as_markup, split_markup
from controlplane.models import (
    Approval,
    ChatAccount,
    Integration,
    NotificationChannel,
    NotificationDelivery,
    TelegramMessage,
)
from controlplane.notifications import DeliveryFailed, register_sender
from controlplane.telegram import (
    Keyboard,
    TelegramClient,
    TelegramError,
    TelegramRateLimited,
    TelegramUnavailable,
)
from controlplane.telegram_integration import client_for
from controlplane.tiers import Tier, tier_of

log = logging.getLogger(__name__)

AUDIENCES = {"": Tier.OBSERVER, "operators": Tier.OPERATOR, "owners": Tier.OWNER}
TARGET_HELP = (
    "For a Telegram bot: the integration's name, then optionally ':operators', ':owners' "
    "or ':chat:<chat id>' (e.g. ops-bot, ops-bot:owners, ops-bot:chat:-1001234567890). "
    "Without one, every staff member who linked an account to the bot."
)


class BadTarget(ValueError):
    """The channel's target does not name a bot and an audience; the message says why."""


@dataclass(frozen=True)
class Target:
    integration: Integration
    audience: str = ""  # "", "operators", "owners" or "chat"
    chat_id: str = ""


@dataclass(frozen=True)
class Recipient:
    chat_id: str
    account: ChatAccount | None = None


def parse_target(target: str) -> Target:
    name, _, rest = target.strip().partition(":")
    integration = Integration.objects.filter(name=name, kind=Integration.Kind.TELEGRAM).first()
    if integration is None:
        raise BadTarget(f"There is no Telegram integration named '{name}'. {TARGET_HELP}")
    if rest.startswith("chat:"):
        chat_id = rest.removeprefix("chat:")
        if not chat_id.removeprefix("-").isdigit() or len(chat_id) > 32:
            raise BadTarget(f"'{chat_id}' is not a Telegram chat id (a number, e.g. -100123).")
        return Target(integration, "chat", chat_id)
    if rest not in AUDIENCES:
        raise BadTarget(f"'{rest}' is not whom a Telegram channel writes to. {TARGET_HELP}")
    return Target(integration, rest)


def recipients(target: Target) -> list[Recipient]:
    if target.audience == "chat":
        return [Recipient(target.chat_id)]
    lowest = AUDIENCES[target.audience]
    accounts = ChatAccount.objects.select_related("user").filter(
        integration=target.integration, platform=ChatAccount.Platform.TELEGRAM
    )
    chosen: dict[str, Recipient] = {}
    for account in accounts.order_by("id"):
        # A member who left the tiers (or is below the audience's) hears nothing.
        if tier_of(account.user) >= lowest and account.chat_id not in chosen:
            chosen[account.chat_id] = Recipient(account.chat_id, account)
    return list(chosen.values())


def send_telegram_delivery(delivery: NotificationDelivery) -> int | None:
    """One attempt at a delivery: write to each recipient it has not reached yet."""
    try:
        target = parse_target(delivery.channel.target)
    except BadTarget as exc:
        raise DeliveryFailed(str(exc)) from None
    if not target.integration.enabled:
        raise DeliveryFailed(f"The Telegram integration {target.integration.name} is disabled.")
    reached = set(
        TelegramMessage.objects.filter(delivery=delivery).values_list("chat_id", flat=True)
    )
    to_write = [r for r in recipients(target) if r.chat_id not in reached]
    if not reached and not to_write:
        raise DeliveryFailed(
            f"Nobody to write to: no staff member linked a Telegram account to "
            f"{target.integration.name} (Profile → Get a link code, then /link CODE)."
        )
    approval = approval_of(delivery.dedupe_key)
    failures: list[DeliveryFailed] = []
    with client_for(target.integration) as client:
        for recipient in to_write:
            try:
                _write(client, target.integration, delivery, recipient, approval)
            except TelegramRateLimited as exc:
                # The bot as a whole must wait: the other chats too.
                raise DeliveryFailed(str(exc), 429, retry_after=exc.retry_after) from None
            except TelegramUnavailable as exc:
                raise DeliveryFailed(str(exc), exc.status) from None
            except TelegramError as exc:
                # This chat refuses (the bot was blocked, the chat is gone): the others
                # still get theirs; the delivery fails, so the log shows which.
                failures.append(DeliveryFailed(f"chat {recipient.chat_id}: {exc}", exc.status))
    if failures:
        raise DeliveryFailed("; ".join(str(f) for f in failures)[:1000], failures[0].status_code)
    return 200


def send_approval_message(account: ChatAccount, approval: Approval) -> None:
    """Send one staff member's chat the approval with its buttons (a chat run that
    paused for it, say), recorded so the buttons work and the message follows the
    approval. Raises `TelegramError` when Telegram refuses."""
    with client_for(account.integration) as client:
        _write(client, account.integration, None, Recipient(account.chat_id, account), approval)


def _write(
    client: TelegramClient,
    integration: Integration,
    delivery: NotificationDelivery | None,
    recipient: Recipient,
    approval: Approval | None,
) -> None:
    token, keyboard = "", cast(Keyboard, ())
    if approval is not None:
        text = str(approval_message(approval))
        if recipient.account is not None and approval.is_pending:
            token, keyboard = new_buttons()
    else:
        assert delivery is not None  # only a notification is sent without an approval
        text = _notice(delivery.subject, delivery.body)
    sent = client.send_message(recipient.chat_id, text, keyboard=keyboard)
    try:
        with transaction.atomic():
            TelegramMessage.objects.create(
                integration=integration,
                chat_id=recipient.chat_id,
                message_id=int(sent.get("message_id") or 0),
                chat_account=recipient.account,
                delivery=delivery,
                approval=approval,
                button_token_hash=token_hash(token) if token else None,
                shown_status=approval.status if approval is not None else "",
            )
    except IntegrityError:
        log.warning("chat %s: message already recorded", recipient.chat_id)


def _notice(subject: str, body: str) -> str:
    markup = format_html("<b>{}</b>", subject) + ("\n" + as_markup(body) if body else "")
    return split_markup(markup, TELEGRAM_MESSAGE_LIMIT, max_messages=1)[0]


def validate_channel_target(kind: str, target: str) -> str:
    """The target as stored, or a `BadTarget` naming what is wrong (the admin form)."""
    if kind != NotificationChannel.Kind.TELEGRAM:
        return target
    parse_target(target)
    return target.strip()


def register() -> None:
    register_sender(NotificationChannel.Kind.TELEGRAM, send_telegram_delivery)
