"""Requesting and deciding approvals, and the waiters that act on decisions.

A later part of the product that pauses for an approval (a costly model call, a
risky tool, a repair over its cap) registers a waiter for its action name; the
waiter is called exactly once per approval, after the decision commits, even when
two people decide at the same moment: the decision is a conditional UPDATE that
only one of them can win.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import models, transaction
from django.dispatch import Signal
from django.utils import timezone

from controlplane import audit
from controlplane.live import HOME_GROUP, publish
from controlplane.models import Approval
from controlplane.notifications import notify
from controlplane.tiers import StaffUser, Tier

log = logging.getLogger(__name__)

Waiter = Callable[[Approval], None]
_waiters: dict[str, list[Waiter]] = defaultdict(list)

# Sent (with `approval_id`) once any approval's status change has committed: decided,
# expired or withdrawn. For what shows an approval elsewhere (a chat message to edit);
# unlike a waiter, it hears of every action and of withdrawals too.
approval_changed = Signal()


def _announce_change(approval_id: int) -> None:
    transaction.on_commit(
        lambda: approval_changed.send(sender=Approval, approval_id=approval_id), robust=True
    )


class ApprovalError(Exception):
    """A decision that is not allowed; the message says why, for a person to read."""


def register_waiter(action: str, waiter: Waiter) -> None:
    """Call `waiter(approval)` once each approval of `action` is decided or expires."""
    if waiter not in _waiters[action]:
        _waiters[action].append(waiter)


def unregister_waiter(action: str, waiter: Waiter) -> None:
    if waiter in _waiters[action]:
        _waiters[action].remove(waiter)


def _notify_waiters(approval_id: int) -> None:
    approval = Approval.objects.get(pk=approval_id)
    for waiter in list(_waiters.get(approval.action, ())):
        try:
            waiter(approval)
        except Exception:
            log.exception("approval waiter %r failed for approval %s", waiter, approval_id)


def request_approval(
    *,
    action: str,
    requested_by: StaffUser,
    reason: str,
    subject: models.Model | None = None,
    amount: Decimal | None = None,
    required_tier: Tier = Tier.OPERATOR,
    proposal: dict[str, Any] | None = None,
    ttl: timedelta | None = None,
) -> Approval:
    """Open an approval. Anything about money needs an Owner, whatever was asked."""
    if not reason.strip():
        raise ApprovalError("An approval request needs a reason.")
    if amount is not None:
        required_tier = Tier.OWNER
    if required_tier not in (Tier.OPERATOR, Tier.OWNER):
        raise ApprovalError("Approvals are decided by Operators or Owners.")
    ttl = ttl or timedelta(hours=settings.APPROVAL_TTL_HOURS)
    with transaction.atomic():
        approval = Approval.objects.create(
            action=action,
            requested_by=requested_by,
            reason=reason.strip(),
            content_type=ContentType.objects.get_for_model(subject) if subject else None,
            object_id=str(subject.pk) if subject else "",
            amount=amount,
            required_tier=required_tier,
            proposal=proposal or {},
            expires_at=timezone.now() + ttl,
        )
        audit.record(
            "approval.requested", approval, after=audit.snapshot(approval), actor=requested_by
        )
        publish(HOME_GROUP, "approval.changed", approval_id=approval.pk)
        notify(
            f"Approval needed: {action} (#{approval.pk})",
            f"{requested_by.get_username()} asks: {approval.reason}\n"
            f"Needs the {Tier(required_tier).label} tier; "
            f"expires {approval.expires_at:%Y-%m-%d %H:%M %Z}.\n"
            f"Decide at {settings.SITE_URL}/approvals/",
            dedupe_key=f"approval-requested:{approval.pk}",
        )
    return approval


def why_not_decidable(
    approval: Approval, user: StaffUser, *, now: datetime | None = None
) -> str | None:
    """Why `user` may not decide `approval`, for a person to read; None when they may.
    The one rule: `decide_approval` refuses with it and every page (and live fragment)
    asks it before offering Approve and Reject, so a button shown is a button that works."""
    if approval.requested_by_id == user.pk:
        return "Nobody can decide their own request; ask another staff member."
    if not user.has_perm("controlplane.decide_approval"):
        return "Your tier cannot decide approvals."
    if not user.has_perm(approval.decision_permission):
        return (
            f"This approval needs the {Tier(approval.required_tier).label} tier "
            f"({'it is about money' if approval.amount is not None else 'that tier owns it'})."
        )
    return _why_closed(approval, now or timezone.now())


def _why_closed(approval: Approval, now: datetime) -> str | None:
    if approval.is_pending:
        return (
            "This request has expired; ask for a new one." if approval.expires_at <= now else None
        )
    if approval.status == Approval.Status.WITHDRAWN:
        return (
            "This request was withdrawn: what asked for it no longer needs it "
            f"({approval.outcome or 'it was stopped'}). There is nothing to decide."
        )
    return f"This request was already {approval.status}."


def decide_approval(
    approval: Approval, *, user: StaffUser, approve: bool, note: str = ""
) -> Approval:
    """Approve or reject. Raises ApprovalError, with the reason, when not allowed."""
    now = timezone.now()
    refusal = why_not_decidable(approval, user, now=now)
    if refusal is not None:
        raise ApprovalError(refusal)
    status = Approval.Status.APPROVED if approve else Approval.Status.REJECTED
    with transaction.atomic():
        won = (
            Approval.objects.filter(
                pk=approval.pk, status=Approval.Status.PENDING, expires_at__gt=now
            )
            .exclude(requested_by=user)
            .update(status=status, decided_by=user, decided_at=now, decision_note=note.strip())
        )
        if not won:
            # Decided, expired or withdrawn since `approval` was read: say which.
            approval.refresh_from_db()
            raise ApprovalError(_why_closed(approval, now) or "This request was just decided.")
        approval.refresh_from_db()
        audit.record(
            f"approval.{status}",
            approval,
            before={"status": Approval.Status.PENDING},
            after={"status": status, "note": approval.decision_note},
            actor=user,
        )
        _after_decision(approval)
    return approval


def expire_due_approvals() -> int:
    """Mark pending approvals past their expiry as expired; their waiters hear of it."""
    expired = 0
    now = timezone.now()
    due = Approval.objects.filter(status=Approval.Status.PENDING, expires_at__lte=now)
    for approval_id in due.values_list("pk", flat=True):
        with transaction.atomic():
            if not Approval.objects.filter(pk=approval_id, status=Approval.Status.PENDING).update(
                status=Approval.Status.EXPIRED, decided_at=now
            ):
                continue  # decided meanwhile
            approval = Approval.objects.get(pk=approval_id)
            audit.record(
                "approval.expired",
                approval,
                before={"status": Approval.Status.PENDING},
                after={"status": Approval.Status.EXPIRED},
            )
            _after_decision(approval)
            expired += 1
    return expired


def withdraw_approval(approval_id: int, *, why: str, actor: StaffUser | None = None) -> bool:
    """Withdraw a pending approval whose asker will never act on it (a stopped run), so
    nobody approves something that will not run. Its waiters are not called: the asker
    withdrew it. Whether it was still pending (a decision that won first stands)."""
    with transaction.atomic():
        if not Approval.objects.filter(pk=approval_id, status=Approval.Status.PENDING).update(
            status=Approval.Status.WITHDRAWN, decided_at=timezone.now(), outcome=why
        ):
            return False
        approval = Approval.objects.get(pk=approval_id)
        audit.record(
            "approval.withdrawn",
            approval,
            before={"status": Approval.Status.PENDING},
            after={"status": Approval.Status.WITHDRAWN, "outcome": why},
            actor=actor,
        )
        publish(HOME_GROUP, "approval.changed", approval_id=approval_id)
        _announce_change(approval_id)
    return True


def _after_decision(approval: Approval) -> None:
    approval_id = approval.pk
    transaction.on_commit(lambda: _notify_waiters(approval_id))
    _announce_change(approval_id)
    publish(HOME_GROUP, "approval.changed", approval_id=approval_id)


def pending_approvals() -> models.QuerySet[Approval]:
    return (
        Approval.objects.filter(status=Approval.Status.PENDING, expires_at__gt=timezone.now())
        .select_related("requested_by", "content_type")
        .order_by("expires_at")
    )
