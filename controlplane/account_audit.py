"""Audit of account changes that alter what someone may do: a new account, tiers,
superuser, active.

Accounts are Django's own model, so they cannot derive from `AuditedModel`; signals
record the same kind of events for them.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models.signals import m2m_changed, post_save, pre_save

from controlplane import audit
from controlplane.tiers import StaffUser

WATCHED_FIELDS = ("is_active", "is_superuser", "is_staff")


def _group_names(user: StaffUser) -> list[str]:
    return sorted(user.groups.values_list("name", flat=True))


def record_tier_change(
    sender: Any, instance: Any, action: str, reverse: bool, **kwargs: Any
) -> None:
    if reverse or action not in {
        "pre_add",
        "pre_remove",
        "pre_clear",
        "post_add",
        "post_remove",
        "post_clear",
    }:
        return
    if action.startswith("pre_"):
        instance._groups_before = _group_names(instance)
        return
    before = getattr(instance, "_groups_before", None)
    after = _group_names(instance)
    if before != after:
        audit.record(
            "user.tiers_changed", instance, before={"groups": before}, after={"groups": after}
        )


def record_account_flags(sender: Any, instance: Any, **kwargs: Any) -> None:
    if instance.pk is None:
        return
    stored = sender._base_manager.filter(pk=instance.pk).values(*WATCHED_FIELDS).first()
    if stored is None:
        return
    changed = {f for f in WATCHED_FIELDS if stored[f] != getattr(instance, f)}
    if changed:
        audit.record(
            "user.access_changed",
            instance,
            before={f: stored[f] for f in sorted(changed)},
            after={f: getattr(instance, f) for f in sorted(changed)},
        )


def record_account_created(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    # Who made whom, whichever path made it (the admin, createsuperuser, a shell): a
    # new account is access granted. Its tiers follow as their own tiers_changed event.
    if created and not kwargs.get("raw"):
        audit.record(
            "user.created",
            instance,
            after={
                "username": instance.get_username(),
                **{f: getattr(instance, f) for f in WATCHED_FIELDS},
            },
        )


def connect() -> None:
    user_model = get_user_model()
    m2m_changed.connect(
        record_tier_change, sender=user_model.groups.through, dispatch_uid="audit_tiers"
    )
    pre_save.connect(record_account_flags, sender=user_model, dispatch_uid="audit_account_flags")
    post_save.connect(
        record_account_created, sender=user_model, dispatch_uid="audit_account_created"
    )
