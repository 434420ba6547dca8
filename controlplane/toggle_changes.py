"""Toggle changes requested by Operators and applied once an Owner approves."""

from __future__ import annotations

from django.db import transaction

from controlplane import audit
from controlplane.approvals import ApprovalError, request_approval
from controlplane.models import Approval, FeatureToggle, ToggleLocked
from controlplane.tiers import StaffUser, Tier

ACTION = "toggle.set"


def request_toggle_change(
    toggle: FeatureToggle, *, enabled: bool, user: StaffUser, reason: str
) -> Approval:
    if toggle.locked or toggle.is_locked_in_database():
        audit.record_refusal(
            "featuretoggle.change_refused",
            toggle,
            after={"enabled": enabled, "locked": True},
            actor=user,
        )
        raise ApprovalError(str(ToggleLocked(toggle.key).message))
    if toggle.enabled == enabled:
        raise ApprovalError(f"'{toggle.key}' is already {'on' if enabled else 'off'}.")
    return request_approval(
        action=ACTION,
        requested_by=user,
        reason=reason,
        subject=toggle,
        required_tier=Tier.OWNER,
        proposal={"key": toggle.key, "enabled": enabled},
    )


def apply_toggle_change(approval: Approval) -> None:
    """Waiter: carry out an approved toggle change, attributed to the approver."""
    if approval.status != Approval.Status.APPROVED:
        return
    key, enabled = approval.proposal["key"], bool(approval.proposal["enabled"])
    with audit.acting_as(approval.decided_by):
        try:
            with transaction.atomic():
                toggle = FeatureToggle.objects.select_for_update().get(key=key)
                toggle.enabled = enabled
                toggle.save()
            outcome = f"'{key}' turned {'on' if enabled else 'off'}."
        except ToggleLocked as exc:
            # The refusal's audit event outlives the rollback (audit.record_refusal).
            outcome = f"Not applied: {exc.message}"
        except FeatureToggle.DoesNotExist:
            outcome = f"Not applied: toggle '{key}' no longer exists."
    Approval.objects.filter(pk=approval.pk).update(outcome=outcome)
