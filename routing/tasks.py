"""Celery tasks of the routing app: thin wrappers with explicit time limits."""

from __future__ import annotations

from celery import shared_task

from routing import insights, stale_reservations


@shared_task(time_limit=120, soft_time_limit=100)
def write_off_stale_reservations() -> int:
    return stale_reservations.write_off_stale_reservations()


@shared_task(time_limit=120, soft_time_limit=100)
def rollup_spend() -> int:
    return insights.rollup_recent()


@shared_task(time_limit=120, soft_time_limit=100)
def detect_anomalies() -> int:
    return len(insights.detect_anomalies())


@shared_task(time_limit=300, soft_time_limit=270)
def recommend_cheaper_models() -> int:
    return len(insights.recommend_cheaper_models())
