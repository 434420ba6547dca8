from __future__ import annotations

from controlplane.models.approvals import Approval
from controlplane.models.audit import AppendOnlyError, AppendOnlyModel, AuditEvent
from controlplane.models.chat_accounts import ChatAccount, LinkCode, TelegramUpdate
from controlplane.models.chat_messages import ChatMessage
from controlplane.models.integrations import Integration
from controlplane.models.notifications import (
    DeliveryAttempt,
    NotificationChannel,
    NotificationDelivery,
)
from controlplane.models.toggles import (
    FeatureToggle,
    ToggleLocked,
    toggle_cache_keys,
    toggle_enabled,
    toggles_enabled,
)

__all__ = [
    "AppendOnlyError",
    "AppendOnlyModel",
    "Approval",
    "AuditEvent",
    "ChatAccount",
    "ChatMessage",
    "DeliveryAttempt",
    "FeatureToggle",
    "Integration",
    "LinkCode",
    "NotificationChannel",
    "NotificationDelivery",
    "TelegramUpdate",
    "ToggleLocked",
    "toggle_cache_keys",
    "toggle_enabled",
    "toggles_enabled",
]
