"""Celery tasks of the core: thin wrappers with explicit time limits."""

from __future__ import annotations

from celery import shared_task

from controlplane import approvals, notifications


@shared_task(time_limit=60, soft_time_limit=50)
def expire_approvals() -> int:
    return approvals.expire_due_approvals()


@shared_task(time_limit=120, soft_time_limit=100)
def send_notification(delivery_id: int) -> None:
    notifications.send_delivery(delivery_id)


@shared_task(time_limit=60, soft_time_limit=50)
def retry_due_deliveries() -> int:
    return notifications.retry_due_deliveries()
