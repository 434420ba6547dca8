"""Celery tasks of the chat app: thin wrappers with explicit time limits."""

from __future__ import annotations

from celery import shared_task

from chat import run_messages, runs
from chat.budget_bounds import WALL_CLOCK_CEILING_SECONDS

# The loop stops a run at its own wall-clock budget (bounded by the ceiling); the task
# limit is only the backstop for a loop that cannot get there, so it comes later.
RUN_SOFT_TIME_LIMIT = WALL_CLOCK_CEILING_SECONDS + 300


@shared_task(
    acks_late=True, soft_time_limit=RUN_SOFT_TIME_LIMIT, time_limit=RUN_SOFT_TIME_LIMIT + 60
)
def run_agent(run_id: int) -> str:
    return runs.run_agent(run_id)


@shared_task(time_limit=60, soft_time_limit=50)
def detect_lost_runs() -> int:
    return len(runs.detect_lost_runs())


@shared_task(time_limit=60, soft_time_limit=50)
def refresh_run_messages() -> int:
    return run_messages.refresh_run_messages()
