"""Notification channels of kind Telegram bot and Discord bot: notifications written
by an integration's bot to staff members' chats, with the delivery log, retries,
backoff and de-duplication of every channel (`controlplane.notifications`).

A channel's target names the bot (a Telegram or Discord integration, by the
channel's kind) and whom it writes to:

- `ops-bot`: every staff member who linked an account to that bot;
- `ops-bot:operators`: those of the Operator tier or above (who decide approvals);
- `ops-bot:owners`: Owners only;
- `ops-bot:chat:<id>`: one chat by its id (a Telegram group the bot is in, a
  Discord server channel the bot may post to).

On Telegram a member's chat is the private chat they linked from; on Discord the bot
writes to the member's direct messages (it opens the DM channel), wherever they
linked from. An approval's notification to a member carries Approve and Reject
buttons (`controlplane.chat_approvals`); a chat given by id gets it without buttons,
since a button there would not belong to one account.

One delivery writes to each recipient once: each message sent is recorded
(`ChatMessage`, by delivery and chat, with the account), and a retry skips the
accounts and chats it reached. A rate limit (429) fails the attempt with the
platform's `retry_after`, which the delivery's next attempt honours; an outage (5xx,
unreachable) fails it for the usual backoff, so deliveries keep retrying while the
platform is down.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from controlplane.chat_approvals import approval_message, approval_of, new_buttons, token_hash
from controlplane.chat_messengers import (
    Buttons,
    ChatRateLimited,
    ChatSendError,
    ChatUnavailable,
    Messenger,
    messenger_for,
    platform_label,
)
from controlplane.chat_replies import as_markup
from controlplane.models import (
    Approval,
    ChatAccount,
    ChatMessage,
    Integration,
    NotificationChannel,
    NotificationDelivery,
)
from controlplane.notifications import DeliveryFailed, register_sender
from controlplane.tiers import Tier, tier_of

log = logging.getLogger(__name__)

AUDIENCES = {"": Tier.OBSERVER, "operators": Tier.OPERATOR, "owners": Tier.OWNER}
# Each bot channel kind and the integrations it writes through.
BOT_KINDS = {
    NotificationChannel.Kind.TELEGRAM: Integration.Kind.TELEGRAM,
    NotificationChannel.Kind.DISCORD_BOT: Integration.Kind.DISCORD,
}
TARGET_HELP = (
    "For a Telegram or Discord bot: the integration's name, then optionally ':operators', "
    "':owners' or ':chat:<chat id>' (e.g. ops-bot, ops-bot:owners, "
    "ops-bot:chat:-1001234567890). Without one, every staff member who linked an account "
    "to the bot."
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
    chat_id: str  # "" for a member whose direct chat is found when writing
    account: ChatAccount | None = None


def parse_target(target: str, kind: str) -> Target:
    name, _, rest = target.strip().partition(":")
    integration_kind = BOT_KINDS[NotificationChannel.Kind(kind)]
    platform = platform_label(integration_kind)
    integration = Integration.objects.filter(name=name, kind=integration_kind).first()
    if integration is None:
        raise BadTarget(f"There is no {platform} integration named '{name}'. {TARGET_HELP}")
    if rest.startswith("chat:"):
        chat_id = rest.removeprefix("chat:")
        if not chat_id.removeprefix("-").isdigit() or len(chat_id) > 32:
            raise BadTarget(f"'{chat_id}' is not a {platform} chat id (a number, e.g. -100123).")
        return Target(integration, "chat", chat_id)
    if rest not in AUDIENCES:
        raise BadTarget(f"'{rest}' is not whom a {platform} channel writes to. {TARGET_HELP}")
    return Target(integration, rest)


def recipients(target: Target) -> list[Recipient]:
    if target.audience == "chat":
        return [Recipient(target.chat_id)]
    lowest = AUDIENCES[target.audience]
    accounts = ChatAccount.objects.select_related("user", "integration").filter(
        integration=target.integration, platform=target.integration.kind
    )
    chosen: dict[str, Recipient] = {}
    for account in accounts.order_by("id"):
        # A member who left the tiers (or is below the audience's) hears nothing.
        if tier_of(account.user) >= lowest and account.platform_user_id not in chosen:
            chosen[account.platform_user_id] = Recipient("", account)
    return list(chosen.values())


def send_bot_delivery(delivery: NotificationDelivery) -> int | None:
    """One attempt at a delivery: write to each recipient it has not reached yet."""
    try:
        target = parse_target(delivery.channel.target, delivery.channel.kind)
    except BadTarget as exc:
        raise DeliveryFailed(str(exc)) from None
    integration = target.integration
    platform = platform_label(integration.kind)
    if not integration.enabled:
        raise DeliveryFailed(f"The {platform} integration {integration.name} is disabled.")
    written = ChatMessage.objects.filter(delivery=delivery)
    reached_chats = set(written.values_list("chat_id", flat=True))
    reached_accounts = set(written.values_list("chat_account_id", flat=True))
    to_write = [
        r
        for r in recipients(target)
        if r.chat_id not in reached_chats
        and (r.account is None or r.account.pk not in reached_accounts)
    ]
    if not reached_chats and not to_write:
        raise DeliveryFailed(
            f"Nobody to write to: no staff member linked a {platform} account to "
            f"{integration.name} (Profile → Get a link code, then /link CODE)."
        )
    approval = approval_of(delivery.dedupe_key)
    failures: list[DeliveryFailed] = []
    try:
        with messenger_for(integration) as messenger:
            for recipient in to_write:
                try:
                    _write(messenger, integration, delivery, recipient, approval)
                except (ChatRateLimited, ChatUnavailable):
                    raise  # the bot as a whole must wait: the other chats too
                except ChatSendError as exc:
                    # This chat refuses (the bot was blocked, the chat is gone): the
                    # others still get theirs; the delivery fails, so the log shows which.
                    who = recipient.chat_id or f"of {recipient.account}"
                    failures.append(DeliveryFailed(f"chat {who}: {exc}", exc.status))
    except ChatRateLimited as exc:
        raise DeliveryFailed(str(exc), 429, retry_after=exc.retry_after) from None
    except ChatUnavailable as exc:
        raise DeliveryFailed(str(exc), exc.status) from None
    except ChatSendError as exc:
        raise DeliveryFailed(str(exc), exc.status) from None
    if failures:
        raise DeliveryFailed("; ".join(str(f) for f in failures)[:1000], failures[0].status_code)
    return 200


def send_approval_message(account: ChatAccount, approval: Approval) -> None:
    """Send one staff member's chat the approval with its buttons (a chat run that
    paused for it, say), recorded so the buttons work and the message follows the
    approval. Raises `ChatSendError` when the platform refuses."""
    with messenger_for(account.integration) as messenger:
        _write(messenger, account.integration, None, Recipient("", account), approval)


def _write(
    messenger: Messenger,
    integration: Integration,
    delivery: NotificationDelivery | None,
    recipient: Recipient,
    approval: Approval | None,
) -> None:
    buttons: Buttons
    token, buttons = "", ()
    if approval is not None:
        text: str = approval_message(approval)
        if recipient.account is not None and approval.is_pending:
            token, buttons = new_buttons()
    else:
        assert delivery is not None  # only a notification is sent without an approval
        text = notice(delivery.subject, delivery.body)
    chat_id = recipient.chat_id
    if recipient.account is not None:
        chat_id = messenger.direct_chat(recipient.account)
    message_id = messenger.send(chat_id, text, buttons)
    try:
        with transaction.atomic():
            ChatMessage.objects.create(
                integration=integration,
                chat_id=chat_id,
                message_id=int(message_id or 0),
                chat_account=recipient.account,
                delivery=delivery,
                approval=approval,
                button_token_hash=token_hash(token) if token else None,
                shown_status=approval.status if approval is not None else "",
            )
    except IntegrityError:
        log.warning("chat %s: message already recorded", chat_id)


def notice(subject: str, body: str) -> SafeString:
    """A notification as a chat reply: its subject in bold, its body as written."""
    markup = format_html("<b>{}</b>", subject) + ("\n" + as_markup(body) if body else "")
    return mark_safe(markup)  # noqa: S308 (the body is escaped by as_markup)


def forget_old_messages(now: datetime | None = None) -> int:
    """Drop the records of bot messages sent more than `CHATOPS_MESSAGE_RECORD_DAYS`
    ago, as the other histories are pruned by age: those of notifications, and those
    of approvals whose message shows the outcome (or will never be edited again). A
    message whose approval is pending, or whose edit is still due, is kept: its
    buttons and its edit need the row. How many were dropped."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.CHATOPS_MESSAGE_RECORD_DAYS)
    settled = (
        Q(approval__isnull=True)
        | (~Q(approval__status=Approval.Status.PENDING) & Q(shown_status=F("approval__status")))
        | Q(edit_attempts__gte=settings.NOTIFY_MAX_ATTEMPTS)
    )
    stale = ChatMessage.objects.filter(settled, sent_at__lt=cutoff).values_list("pk", flat=True)
    deleted, _ = ChatMessage.objects.filter(pk__in=list(stale[:5000])).delete()
    return deleted


def validate_channel_target(kind: str, target: str) -> str:
    """The target as stored, or a `BadTarget` naming what is wrong (the admin form)."""
    if kind not in BOT_KINDS:
        return target
    parse_target(target, kind)
    return target.strip()


def register() -> None:
    register_sender(NotificationChannel.Kind.TELEGRAM, send_bot_delivery)
    register_sender(NotificationChannel.Kind.DISCORD_BOT, send_bot_delivery)
