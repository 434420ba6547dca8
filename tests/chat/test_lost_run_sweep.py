"""A run whose worker died is stopped within CHAT_HEARTBEAT_TIMEOUT_SECONDS plus 5 s:
the sweep's period is part of that promise, so it is derived from the timeout, and
Celery beat and the embedded scheduler both run the sweep that often."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from celery.schedules import maybe_schedule
from django.utils import timezone

from chat.models import ChatSession, Run, RunStatus, StopReason
from chat.runs import detect_lost_runs, open_run
from controlplane.background import EmbeddedScheduler
from controlplane.settings import lost_run_sweep_seconds

PROMISE_SLACK_SECONDS = 5


@pytest.mark.parametrize(
    ("timeout", "period"), [(30, 5.0), (600, 5.0), (12, 2.0), (3, 1.0), (1, 1.0)]
)
def test_the_sweep_period_is_derived_from_the_heartbeat_timeout(
    timeout: int, period: float
) -> None:
    assert lost_run_sweep_seconds(timeout) == period


@pytest.mark.django_db  # the scheduler imports every app's tasks, as a worker does
def test_beat_and_the_embedded_scheduler_sweep_at_the_derived_period(settings: Any) -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["detect-lost-runs"]
    scheduler = EmbeddedScheduler(settings.CELERY_BEAT_SCHEDULE)
    _, schedule, _ = scheduler.entries["detect-lost-runs"]

    assert entry["task"] == "chat.tasks.detect_lost_runs"
    assert entry["schedule"] == lost_run_sweep_seconds(settings.CHAT_HEARTBEAT_TIMEOUT_SECONDS)
    assert schedule.run_every.total_seconds() <= PROMISE_SLACK_SECONDS


def sweep_period(settings: Any) -> float:
    schedule = maybe_schedule(settings.CELERY_BEAT_SCHEDULE["detect-lost-runs"]["schedule"])
    return float(schedule.run_every.total_seconds())


@pytest.mark.django_db
@pytest.mark.parametrize("phase", [0.0, 0.25, 0.5, 0.75, 0.999])
def test_a_run_whose_worker_died_is_stopped_within_the_timeout_plus_five_seconds(
    operator: Any, settings: Any, phase: float
) -> None:
    """On a fake clock: the worker beats at `died`, then dies; the sweeps run every
    period of the schedule, at any phase against the death."""
    timeout, period = settings.CHAT_HEARTBEAT_TIMEOUT_SECONDS, sweep_period(settings)
    died = timezone.now()
    session = ChatSession.objects.create(user=operator)
    run = open_run(session, user=operator, message="Hi", mode="normal")
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.STREAMING, started_at=died, heartbeat_at=died
    )

    sweep_at = died - timedelta(seconds=phase * period)
    while not detect_lost_runs(sweep_at):
        assert sweep_at - died <= timedelta(seconds=timeout + PROMISE_SLACK_SECONDS)
        sweep_at += timedelta(seconds=period)

    assert sweep_at - died > timedelta(seconds=timeout)  # never before the timeout
    assert sweep_at - died <= timedelta(seconds=timeout + PROMISE_SLACK_SECONDS)
    assert Run.objects.get(pk=run.pk).stop_reason == StopReason.WORKER_LOST
