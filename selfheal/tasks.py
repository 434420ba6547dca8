"""Celery tasks of the self-heal app: thin wrappers with explicit time limits."""

from __future__ import annotations

from celery import shared_task

from selfheal import autoheal, stuck, unblock


@shared_task(time_limit=60, soft_time_limit=50)
def detect_stuck() -> dict[str, int]:
    report = stuck.detect_stuck()
    return {
        "offline": len(report.offline),
        "requeued": len(report.requeued),
        "failed": len(report.failed),
    }


@shared_task(time_limit=120, soft_time_limit=100)
def route_unclaimable_tasks() -> int:
    return len(unblock.route_unclaimable_tasks())


@shared_task(time_limit=120, soft_time_limit=100)
def evaluate_autoheal_rules() -> dict[str, object]:
    return autoheal.evaluate_rules().as_dict()
