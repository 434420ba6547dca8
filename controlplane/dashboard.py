"""What Home shows: only real data, each panel with an empty state that says what to do."""

from __future__ import annotations

from typing import Any

from controlplane.approvals import pending_approvals
from controlplane.health import probe_all
from controlplane.models import AuditEvent, FeatureToggle
from controlplane.tiers import StaffUser

RECENT_AUDIT_EVENTS = 10


def pending_approvals_context(user: StaffUser) -> dict[str, Any]:
    approvals = list(pending_approvals()[:20])
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
