"""What Home shows: only real data, each panel with an empty state that says what to do."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controlplane.approvals import pending_approvals, why_not_decidable
from controlplane.health import probe_all
from controlplane.models import Approval, AuditEvent, FeatureToggle
from controlplane.tiers import StaffUser

RECENT_AUDIT_EVENTS = 10


@dataclass(frozen=True)
class PendingApproval:
    """A pending approval as one viewer sees it: `refusal` says why they may not decide
    it (no Approve and Reject for them), None when they may."""

    approval: Approval
    refusal: str | None


def pending_approvals_context(user: StaffUser) -> dict[str, Any]:
    approvals = [
        PendingApproval(approval, why_not_decidable(approval, user))
        for approval in pending_approvals()[:20]
    ]
    return {
        "pending_approvals": approvals,
        "pending_count": pending_approvals().count(),
        "user": user,
    }


def home_context(user: StaffUser) -> dict[str, Any]:
    return {
        **pending_approvals_context(user),
        "toggles_off": list(FeatureToggle.objects.filter(enabled=False)),
        "recent_audit": list(AuditEvent.objects.select_related("actor")[:RECENT_AUDIT_EVENTS]),
        "probes": probe_all(),
    }
