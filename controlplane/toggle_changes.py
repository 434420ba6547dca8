"""Toggle changes: switched by an Owner on the Toggles page, or requested by Operators
and applied once an Owner approves."""

from __future__ import annotations

from urllib.parse import urlencode

from django.db import transaction
from django.urls import reverse

from controlplane import audit
from controlplane.approvals import ApprovalError, request_approval
from controlplane.models import Approval, FeatureToggle, ToggleLocked
from controlplane.tiers import StaffUser, Tier

ACTION = "toggle.set"


class ToggleNotSwitched(ValueError):
    """The switch was refused (no such toggle, locked, already in that state); the
    message says why, for the form."""


def toggle_page_url(key: str) -> str:
    """The Toggles page opened at this toggle's switch: where a next action that says
    "Switch X on" leads, so switching it is one click (and a reason) away."""
    return f"{reverse('toggles')}?{urlencode({'toggle': key})}#toggle-{key}"


def switch_toggle(key: str, *, enabled: bool, user: StaffUser, reason: str) -> FeatureToggle:
    """An Owner switches a toggle directly. It goes through the model's `save()`, as the
    admin's change does, so the audit event (with the reason) and the cache update are
    the admin's own; a locked toggle refuses it there, audited. The caller checks the
    permission (`controlplane.change_featuretoggle`)."""
    if not reason.strip():
        raise ToggleNotSwitched("Say why.")
    with audit.acting_as(user, audit.current_context().client_address), audit.because(reason):
        try:
            found = FeatureToggle.objects.filter(key=key).first()
            if found is None:
                raise ToggleNotSwitched(f"There is no toggle '{key}'.")
            found.refuse_if_locked()  # before our transaction: the refusal is kept at once
            with transaction.atomic():
                toggle = FeatureToggle.objects.select_for_update().filter(pk=found.pk).first()
                if toggle is None:
                    raise ToggleNotSwitched(f"There is no toggle '{key}'.")
                if toggle.enabled == enabled:
                    raise ToggleNotSwitched(f"'{key}' is already {'on' if enabled else 'off'}.")
                toggle.enabled = enabled
                toggle.save()
        except ToggleLocked as exc:
            # A refusal's audit event outlives any rollback (audit.record_refusal).
            raise ToggleNotSwitched(str(exc.message)) from exc
    return toggle


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
