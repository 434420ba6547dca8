"""Celery tasks of the health monitor: thin wrappers with explicit time limits."""

from __future__ import annotations

from celery import shared_task

from healthmon import fix_tasks


@shared_task(time_limit=120, soft_time_limit=100)
def open_fix_tasks(fingerprint_ids: list[int]) -> int:
    return len(fix_tasks.open_fix_tasks(fingerprint_ids))
