"""Diagnose system: the six read-only checks of `selfheal.playbooks.checks`, run in
order as a playbook, within `DIAGNOSIS_DEADLINE_SECONDS` however large the queue.

A check that fails to run, or that the deadline leaves no time for, is a warning
finding rather than a crash, so a diagnosis always reports all six.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from selfheal.playbooks.checks import CHECKS
from selfheal.playbooks.executor import Playbook, PlaybookRun, register_playbook
from selfheal.playbooks.findings import WARNING, Finding
from selfheal.playbooks.steps import step

log = logging.getLogger(__name__)

# The whole diagnosis: checks not started by then are reported as skipped.
DIAGNOSIS_DEADLINE_SECONDS = 10.0
# On PostgreSQL, no query of a check may run longer than this.
CHECK_STATEMENT_TIMEOUT_MS = 3000


@contextmanager
def _bounded_queries(timeout_ms: int) -> Iterator[None]:
    """On PostgreSQL, a check's queries give up after `timeout_ms`."""
    if connection.vendor != "postgresql":
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL statement_timeout = {max(int(timeout_ms), 1)}")
        yield


def run_check(name: str, now: datetime, *, deadline: float | None = None) -> Finding:
    """One check; a check that fails to run is a warning, not a crash. `deadline` is a
    `time.monotonic()` value past which the check is skipped rather than started."""
    remaining_ms = (
        CHECK_STATEMENT_TIMEOUT_MS if deadline is None else (deadline - time.monotonic()) * 1000
    )
    if remaining_ms <= 0:
        return Finding(
            name,
            WARNING,
            f"Skipped: the diagnosis ran past its {DIAGNOSIS_DEADLINE_SECONDS:.0f} s limit.",
            {},
            "Run the diagnosis again; if it is slow again, check the database.",
            needs_person=True,
        )
    _, check = CHECKS[name]
    started = time.perf_counter()
    try:
        with _bounded_queries(min(CHECK_STATEMENT_TIMEOUT_MS, int(remaining_ms))):
            finding = check(now)
    except Exception as exc:
        log.exception("diagnosis check %s failed", name)
        finding = Finding(
            name,
            WARNING,
            f"The check could not run: {type(exc).__name__}: {exc}",
            {},
            "Look at the server log for the error.",
            needs_person=True,
        )
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    return replace(finding, evidence={**finding.evidence, "check_ms": elapsed_ms})


def diagnose_system(now: datetime | None = None) -> list[Finding]:
    """All six checks, in order, within DIAGNOSIS_DEADLINE_SECONDS."""
    now = now or timezone.now()
    deadline = time.monotonic() + DIAGNOSIS_DEADLINE_SECONDS
    return [run_check(name, now, deadline=deadline) for name in CHECKS]


@register_playbook
class DiagnosePlaybook(Playbook):
    name = "diagnose"
    title = "Diagnose system"
    description = (
        "Six read-only checks: database, worker heartbeats, task queue, error patterns, "
        "completion rate, system resources."
    )

    def _check(self, run: PlaybookRun, name: str) -> None:
        deadline = run.started + DIAGNOSIS_DEADLINE_SECONDS
        run.add_findings([run_check(name, run.now, deadline=deadline).as_record()])

    @step("Check database connectivity and latency", action="read")
    def database(self, run: PlaybookRun) -> None:
        self._check(run, "database")

    @step("Check worker heartbeats", action="read")
    def worker_heartbeats(self, run: PlaybookRun) -> None:
        self._check(run, "worker_heartbeats")

    @step("Check task queue health", action="read")
    def task_queue(self, run: PlaybookRun) -> None:
        self._check(run, "task_queue")

    @step("Check recent error patterns", action="read")
    def error_patterns(self, run: PlaybookRun) -> None:
        self._check(run, "error_patterns")

    @step("Check the task completion rate over 24 hours", action="read")
    def completion_rate(self, run: PlaybookRun) -> None:
        self._check(run, "completion_rate")

    @step("Check system resources", action="read")
    def system_resources(self, run: PlaybookRun) -> None:
        self._check(run, "system_resources")
