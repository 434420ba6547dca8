"""The audit of a rule's channels: a many-to-many change is not a field of the row,
so `AuditedModel` does not see it; this records it the same way, before and after."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import m2m_changed

from controlplane import audit
from healthmon.models import AlertRule

_WATCHED = {"pre_add", "pre_remove", "pre_clear", "post_add", "post_remove", "post_clear"}


def _channel_names(rule: AlertRule) -> list[str]:
    return sorted(rule.channels.values_list("name", flat=True))


def record_channel_change(
    sender: Any, instance: Any, action: str, reverse: bool, **kwargs: Any
) -> None:
    if reverse or action not in _WATCHED:
        return  # a channel's side of the relation, or nothing changed yet
    if action.startswith("pre_"):
        instance._channels_before = _channel_names(instance)
        return
    before = getattr(instance, "_channels_before", None)
    after = _channel_names(instance)
    if before != after:
        audit.record(
            "alertrule.channels_changed",
            instance,
            before={"channels": before},
            after={"channels": after},
        )


def connect() -> None:
    m2m_changed.connect(
        record_channel_change,
        sender=AlertRule.channels.through,
        dispatch_uid="audit_alert_rule_channels",
    )
