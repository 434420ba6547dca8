"""Celery tasks of the core: thin wrappers with explicit time limits."""

from __future__ import annotations

from celery import shared_task

from controlplane import (
    approvals,
    chat_approvals,
    chat_channel,
    discord_interactions,
    notifications,
)


@shared_task(time_limit=60, soft_time_limit=50)
def expire_approvals() -> int:
    expired = approvals.expire_due_approvals()
    # Chat messages of decided approvals whose edit was held back (a rate limit, an
    # outage, a lost countdown) are brought up to date on the same tick.
    chat_approvals.refresh_approval_messages()
    return expired


@shared_task(time_limit=120, soft_time_limit=100)
def refresh_approval_messages(approval_id: int) -> int:
    return chat_approvals.refresh_approval_messages(approval_id)


@shared_task(time_limit=300, soft_time_limit=280)
def forget_old_chat_messages() -> int:
    return chat_channel.forget_old_messages()


@shared_task(time_limit=120, soft_time_limit=100)
def send_notification(delivery_id: int) -> None:
    notifications.send_delivery(delivery_id)


@shared_task(time_limit=60, soft_time_limit=50)
def retry_due_deliveries() -> int:
    return notifications.retry_due_deliveries()


@shared_task(time_limit=840, soft_time_limit=800)
def answer_discord_command(
    integration_id: int, sender: dict[str, str], text: str, token: str, in_server: bool
) -> None:
    # Within the interaction token's 15 minutes, whatever the command does.
    discord_interactions.answer_deferred(integration_id, sender, text, token, in_server)
