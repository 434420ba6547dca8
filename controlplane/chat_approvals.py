"""Approvals decided from a chat message (Telegram or Discord: the same code for
both), and those messages kept up to date.

Every approval notification a bot channel sends to a staff member's chat carries
Approve and Reject buttons (`approval_message`). Their data (Telegram's
callback_data, Discord's custom_id) is `apv:a:<token>` or `apv:r:<token>`: the token
is random and opaque, only its SHA-256 is stored, on the `ChatMessage` row of that
message, which binds it to the bot, the chat, the message id and the chat account
it was sent to. Pressing a button:

- from another account, another chat or another message: refused, and the token
  stays good for the person it was sent to;
- by the linked staff member: the token is claimed by one conditional UPDATE (a
  replayed callback finds it used) and the approval is decided by
  `controlplane.approvals.decide_approval`, the web's own code path (tier, money needs
  an Owner, no self-approval, expiry, one winner). A refused decision gives the token
  back: pressing again is refused again for the same reason, never decides twice.

Whenever an approval's status changes (decided here or on the web, expired,
withdrawn), `approval_changed` enqueues `refresh_approval_messages`, which edits
each of its messages to show the outcome and who decided, without buttons (through
the bot's API on both platforms: a Discord button's interaction is answered with
an ephemeral notice, and the edit follows). Edits are throttled: at most one per
chat every `TELEGRAM_EDIT_INTERVAL_SECONDS` (Telegram allows about one a second;
Discord five in five seconds); a rate limit (429) holds the bot's edits for
`retry_after`, an outage backs off; a held edit waits in `edit_due_at` and the
approvals' periodic task picks it up.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import F, Q
from django.dispatch import receiver
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from controlplane.approvals import ApprovalError, approval_changed, decide_approval
from controlplane.background import enqueue
from controlplane.chat_commands import (
    STALE_BUTTON,
    Button,
    ButtonPress,
    register_button_handler,
)
from controlplane.chat_messengers import (
    ChatAuthRefused,
    ChatRateLimited,
    ChatSendError,
    ChatUnavailable,
    messenger_for,
    platform_label,
)
from controlplane.models import Approval, ChatMessage
from controlplane.money import usd
from controlplane.notifications import backoff_seconds
from controlplane.tiers import Tier

log = logging.getLogger(__name__)

PREFIX = "apv"
APPROVE, REJECT = "a", "r"
# The notification `request_approval` sends: its dedupe key names the approval.
REQUESTED_KEY = "approval-requested:"
REASON_LIMIT = 1500
NOT_YOURS = "This button was sent to someone else: it does nothing for you."
USED = "This button was already used."
DECIDED_FROM_CHAT = "Decided from {}."  # the platform


def approval_of(dedupe_key: str) -> Approval | None:
    """The approval a notification asks about, if it is one."""
    number = dedupe_key.removeprefix(REQUESTED_KEY)
    if number == dedupe_key or not number.isdigit():
        return None
    return Approval.objects.select_related("requested_by", "decided_by").filter(pk=number).first()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_buttons() -> tuple[str, tuple[tuple[Button, ...], ...]]:
    """A fresh token and the Approve/Reject buttons carrying it."""
    token = secrets.token_urlsafe(18)
    buttons = (
        (
            Button("Approve", f"{PREFIX}:{APPROVE}:{token}"),
            Button("Reject", f"{PREFIX}:{REJECT}:{token}"),
        ),
    )
    return token, buttons


def approval_message(approval: Approval) -> SafeString:
    """The approval as a chat reply (markup): what is asked, by whom, and where it stands."""
    reason = approval.reason
    if len(reason) > REASON_LIMIT:
        reason = reason[:REASON_LIMIT] + "…"
    lines: list[str] = [
        format_html("<b>Approval needed: {}</b> (#{})", approval.action, approval.pk),
        format_html("{} asks: {}", approval.requested_by.get_username(), reason),
    ]
    if approval.amount is not None:
        lines.append(format_html("Amount: {}", usd(approval.amount)))
    lines.append(
        format_html(
            "Needs the {} tier; expires {}.",
            Tier(approval.required_tier).label,
            _at(approval.expires_at),
        )
    )
    url = settings.SITE_URL.rstrip("/") + reverse("approvals")
    lines.append(format_html('<a href="{}">Open the approvals page</a>', url))
    outcome = _outcome_line(approval)
    if outcome:
        lines.append(outcome)
    return SafeString("\n".join(lines))


def _at(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M %Z}"


def _outcome_line(approval: Approval) -> SafeString | str:
    when = approval.decided_at or timezone.now()
    if approval.status in (Approval.Status.APPROVED, Approval.Status.REJECTED):
        decider = approval.decided_by.get_username() if approval.decided_by else "?"
        return format_html(
            "<b>{}</b> by {} at {}.",
            "Approved" if approval.status == Approval.Status.APPROVED else "Rejected",
            decider,
            _at(when),
        )
    if approval.status == Approval.Status.EXPIRED:
        return format_html("<b>Expired</b> at {}: nobody decided.", _at(when))
    if approval.status == Approval.Status.WITHDRAWN:
        return format_html("<b>Withdrawn</b>: {}", approval.outcome or "no longer needed")
    return ""


# Pressing a button


def press(button: ButtonPress) -> str:
    """Decide the approval a button belongs to, as the linked staff member; the notice."""
    parts = button.data.split(":", 2)
    if len(parts) != 3 or parts[1] not in (APPROVE, REJECT):
        return STALE_BUTTON
    row = (
        ChatMessage.objects.select_related("approval")
        .filter(button_token_hash=token_hash(parts[2]), approval__isnull=False)
        .first()
    )
    if row is None or row.approval is None:
        return STALE_BUTTON
    if not _sent_to(row, button):
        log.warning(
            "approval #%s: a button was pressed by %s user %s, not the one it was sent to",
            row.approval_id,
            platform_label(button.identity.platform),
            button.identity.platform_user_id,
        )
        return NOT_YOURS
    assert button.user is not None  # only linked staff reach a button handler
    approve = parts[1] == APPROVE
    try:
        with transaction.atomic():
            claimed = ChatMessage.objects.filter(pk=row.pk, button_used_at__isnull=True).update(
                button_used_at=timezone.now()
            )
            if not claimed:
                return USED
            decided = decide_approval(
                row.approval,
                user=button.user,
                approve=approve,
                note=DECIDED_FROM_CHAT.format(platform_label(button.identity.platform)),
            )
    except ApprovalError as exc:
        return str(exc)
    return f"Approval #{decided.pk} {decided.status}."


def _sent_to(row: ChatMessage, button: ButtonPress) -> bool:
    return (
        button.account is not None
        and row.chat_account_id == button.account.pk
        and row.integration_id == button.identity.integration.pk
        and row.chat_id == button.identity.chat_id
        and str(row.message_id) == button.message_id
    )


register_button_handler(PREFIX, press)


# Keeping the messages up to date


@receiver(approval_changed, dispatch_uid="chat_approvals.approval_changed")
def _approval_changed(sender: object, approval_id: int, **kwargs: object) -> None:
    if ChatMessage.objects.filter(approval_id=approval_id).exists():
        _enqueue_refresh(approval_id)


def _enqueue_refresh(approval_id: int, countdown: float | None = None) -> None:
    from controlplane.tasks import refresh_approval_messages

    enqueue(refresh_approval_messages, approval_id, countdown=countdown)


def _stale(approval_id: int | None = None) -> list[ChatMessage]:
    now = timezone.now()
    rows = (
        ChatMessage.objects.select_related("integration")
        .filter(approval__isnull=False)
        .exclude(approval__status=Approval.Status.PENDING)
        .exclude(shown_status=F("approval__status"))
        .filter(Q(edit_due_at__isnull=True) | Q(edit_due_at__lte=now))
        .filter(edit_attempts__lt=settings.NOTIFY_MAX_ATTEMPTS)
    )
    if approval_id is not None:
        rows = rows.filter(approval_id=approval_id)
    return list(rows.order_by("id")[:200])


def refresh_approval_messages(approval_id: int | None = None) -> int:
    """Edit the messages of an approval (or of every approval) that no longer show
    its status; how many were edited. Rows it cannot edit yet get an `edit_due_at`."""
    edited = 0
    held: set[int] = set()  # bots whose edits wait for a rate limit or an outage
    for row in _stale(approval_id):
        if row.integration_id in held:
            continue
        if not _edit_allowed(row):
            _hold(row, settings.TELEGRAM_EDIT_INTERVAL_SECONDS, attempt=False)
            continue
        outcome = _edit(row)
        if outcome is None:
            edited += 1
        else:
            held.add(row.integration_id)
            _hold_bot(row, outcome)
    return edited


def _edit_allowed(row: ChatMessage) -> bool:
    """At most one edit per chat per interval (within both platforms' limits)."""
    interval = settings.TELEGRAM_EDIT_INTERVAL_SECONDS
    if interval <= 0:
        return True
    key = f"chat:edit:{row.integration_id}:{row.chat_id}"
    return bool(cache.add(key, 1, timeout=interval))


def _edit(row: ChatMessage) -> float | None:
    """Edit one message to show its approval's status; None when done, else how many
    seconds to wait before trying again."""
    assert row.approval_id is not None  # only approval messages are edited
    approval = Approval.objects.select_related("requested_by", "decided_by").get(pk=row.approval_id)
    try:
        with messenger_for(row.integration) as messenger:
            messenger.edit(row.chat_id, str(row.message_id), approval_message(approval))
    except ChatRateLimited as exc:
        return float(exc.retry_after)
    except ChatUnavailable as exc:
        row.integration.record_error(f"An approval message was not edited: {exc}")
        return backoff_seconds(row.edit_attempts + 1)
    except ChatSendError as exc:
        # Deleted by the person, or the bot was blocked: nothing to edit, not worth a retry.
        if isinstance(exc, ChatAuthRefused):
            row.integration.record_error(f"An approval message was not edited: {exc}")
        else:
            log.info("approval message %s not edited: %s", row.pk, exc)
    ChatMessage.objects.filter(pk=row.pk).update(shown_status=approval.status, edit_due_at=None)
    return None


def _hold(row: ChatMessage, seconds: float, *, attempt: bool) -> None:
    due = timezone.now() + timedelta(seconds=seconds)
    ChatMessage.objects.filter(pk=row.pk).update(
        edit_due_at=due, edit_attempts=F("edit_attempts") + (1 if attempt else 0)
    )
    _enqueue_refresh(row.approval_id or 0, countdown=seconds)


def _hold_bot(row: ChatMessage, seconds: float) -> None:
    """The bot is rate-limited or unreachable: its other stale messages wait too."""
    _hold(row, seconds, attempt=True)
    due = timezone.now() + timedelta(seconds=seconds)
    ChatMessage.objects.filter(
        integration_id=row.integration_id, approval__isnull=False, edit_due_at__isnull=True
    ).exclude(shown_status=F("approval__status")).exclude(
        approval__status=Approval.Status.PENDING
    ).update(edit_due_at=due)
