"""Diagnose system: six read-only checks, each a finding with a severity, evidence
(numbers) and a suggested action.

Every check reads aggregates (one or two queries each, never a loop over tasks), so
the whole diagnosis stays well under `DIAGNOSIS_DEADLINE_SECONDS` however large the
queue. Thresholds are the module constants below; a test or a deployment can change
them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from statistics import median
from typing import Any

import psutil
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Min, Q
from django.utils import timezone

from selfheal.engine import silence_limit
from selfheal.error_patterns import fix_task_dedupe_key, top_error_patterns
from selfheal.models import OPEN_STATUSES, Task, TaskStatus, Worker
from selfheal.playbooks.base import (
    SEVERITY_RANK,
    Playbook,
    PlaybookRun,
    register_playbook,
    step,
)

log = logging.getLogger(__name__)

OK, WARNING, CRITICAL = "ok", "warning", "critical"
NOTHING_TO_DO = "None needed."

# The whole diagnosis: checks not started by then are reported as skipped.
DIAGNOSIS_DEADLINE_SECONDS = 10.0
# On PostgreSQL, no query of a check may run longer than this.
CHECK_STATEMENT_TIMEOUT_MS = 3000

DATABASE_PINGS = 3
DATABASE_LATENCY_WARNING_MS = 50.0
DATABASE_LATENCY_CRITICAL_MS = 500.0

QUEUE_PENDING_AGE_WARNING = timedelta(minutes=15)
QUEUE_PENDING_AGE_CRITICAL = timedelta(hours=1)
QUEUE_BLOCKED_WARNING = 1
QUEUE_BLOCKED_CRITICAL = 10
QUEUE_STUCK_RUNNING_WARNING = 1
QUEUE_STUCK_RUNNING_CRITICAL = 5
QUEUE_WAITING_APPROVAL_WARNING = 10

ERROR_PATTERN_LIMIT = 10
ERROR_PATTERN_WARNING_COUNT = 10
ERROR_PATTERN_CRITICAL_COUNT = 100

COMPLETION_WINDOW = timedelta(hours=24)
COMPLETION_MIN_FINISHED = 10
COMPLETION_RATE_WARNING = 0.8
COMPLETION_RATE_CRITICAL = 0.5

DISK_PERCENT_WARNING = 85.0
DISK_PERCENT_CRITICAL = 95.0
MEMORY_PERCENT_WARNING = 90.0
MEMORY_PERCENT_CRITICAL = 97.0
LOAD_PER_CPU_WARNING = 2.0
LOAD_PER_CPU_CRITICAL = 4.0


@dataclass(frozen=True)
class Finding:
    check: str
    severity: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    suggested_action: str = NOTHING_TO_DO

    def as_record(self) -> dict[str, Any]:
        return asdict(self)


def _worst(*severities: str) -> str:
    return max(severities, key=lambda s: SEVERITY_RANK[s], default=OK)


def _graded(value: float, warning: float, critical: float, *, below: bool = False) -> str:
    """The severity of `value` against thresholds (`below`: lower is worse)."""
    if below:
        return CRITICAL if value < critical else WARNING if value < warning else OK
    return CRITICAL if value >= critical else WARNING if value >= warning else OK


def _age_seconds(now: datetime, moment: datetime | None) -> int | None:
    return None if moment is None else max(int((now - moment).total_seconds()), 0)


# --- the six checks ------------------------------------------------------------------


def ping_database() -> float:
    """Milliseconds for one round trip to the database."""
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return (time.perf_counter() - started) * 1000


def check_database(now: datetime) -> Finding:
    try:
        latency = median(ping_database() for _ in range(DATABASE_PINGS))
    except Exception as exc:
        return Finding(
            "database",
            CRITICAL,
            f"The database does not answer: {exc}",
            {"reachable": 0},
            "Check that the database server is running and DATABASE_URL points at it.",
        )
    severity = _graded(latency, DATABASE_LATENCY_WARNING_MS, DATABASE_LATENCY_CRITICAL_MS)
    return Finding(
        "database",
        severity,
        f"{connection.vendor} answers in {latency:.1f} ms.",
        {"reachable": 1, "latency_ms": round(latency, 2)},
        NOTHING_TO_DO
        if severity == OK
        else "Look at the database server's load and the network between it and the app.",
    )


def check_worker_heartbeats(now: datetime) -> Finding:
    # Live as the engine counts it: heard from within MISSED_HEARTBEATS intervals.
    stale_after = int(silence_limit().total_seconds())
    cutoff = now - silence_limit()
    online = Q(status=Worker.Status.ONLINE)
    heard = Q(last_heartbeat__gte=cutoff)
    counts = Worker.objects.filter(revoked_at__isnull=True).aggregate(
        registered=Count("id"),
        live=Count("id", filter=online & heard),
        silent=Count("id", filter=~Q(status=Worker.Status.OFFLINE) & ~heard),
        offline=Count("id", filter=Q(status=Worker.Status.OFFLINE)),
        oldest_live_heartbeat=Min("last_heartbeat", filter=online & heard),
    )
    pending = Task.objects.filter(status=TaskStatus.PENDING).exists()
    evidence = {
        "registered": counts["registered"],
        "live": counts["live"],
        "silent": counts["silent"],
        "offline": counts["offline"],
        "pending_work": int(pending),
        "stale_after_s": stale_after,
        "oldest_live_heartbeat_age_s": _age_seconds(now, counts["oldest_live_heartbeat"]),
    }
    if counts["live"] == 0 and pending:
        return Finding(
            "worker_heartbeats",
            CRITICAL,
            "Tasks are pending and no worker has sent a heartbeat recently.",
            evidence,
            "Start a worker (manage.py run_worker --capabilities ...) or check why "
            "the workers stopped.",
        )
    if counts["silent"]:
        return Finding(
            "worker_heartbeats",
            WARNING,
            f"{counts['silent']} worker(s) not marked offline have been silent for more "
            f"than {stale_after} s.",
            evidence,
            "Run manage.py detect_stuck to release their leases, then restart those workers.",
        )
    if counts["registered"] and counts["live"] == 0:
        return Finding(
            "worker_heartbeats",
            WARNING,
            "No worker is live (nothing is pending yet).",
            evidence,
            "Start a worker before work arrives.",
        )
    return Finding(
        "worker_heartbeats",
        OK,
        f"{counts['live']} live worker(s) of {counts['registered']} registered."
        if counts["registered"]
        else "No workers are registered and no work is waiting.",
        evidence,
    )


def check_task_queue(now: datetime) -> Finding:
    counts = Task.objects.filter(status__in=OPEN_STATUSES).aggregate(
        pending=Count("id", filter=Q(status=TaskStatus.PENDING)),
        oldest_pending=Min("created_at", filter=Q(status=TaskStatus.PENDING)),
        running=Count("id", filter=Q(status=TaskStatus.RUNNING)),
        stuck_running=Count("id", filter=Q(status=TaskStatus.RUNNING, lease_expires_at__lt=now)),
        blocked=Count("id", filter=Q(status=TaskStatus.BLOCKED)),
        waiting_approval=Count("id", filter=Q(status=TaskStatus.WAITING_APPROVAL)),
    )
    oldest_age = _age_seconds(now, counts["oldest_pending"])
    evidence = {
        "pending": counts["pending"],
        "oldest_pending_age_s": oldest_age,
        "running": counts["running"],
        "stuck_running": counts["stuck_running"],
        "blocked": counts["blocked"],
        "waiting_approval": counts["waiting_approval"],
    }
    problems: list[tuple[str, str, str]] = []
    if oldest_age is not None:
        severity = _graded(
            oldest_age,
            QUEUE_PENDING_AGE_WARNING.total_seconds(),
            QUEUE_PENDING_AGE_CRITICAL.total_seconds(),
        )
        if severity != OK:
            problems.append(
                (
                    severity,
                    f"the oldest pending task has waited {oldest_age // 60} min",
                    "Check that a live worker has the capabilities the pending tasks need.",
                )
            )
    for name, warning, critical, what in (
        ("blocked", QUEUE_BLOCKED_WARNING, QUEUE_BLOCKED_CRITICAL, "blocked"),
        (
            "stuck_running",
            QUEUE_STUCK_RUNNING_WARNING,
            QUEUE_STUCK_RUNNING_CRITICAL,
            "running past their lease",
        ),
    ):
        severity = _graded(counts[name], warning, critical)
        if severity != OK:
            problems.append(
                (
                    severity,
                    f"{counts[name]} task(s) {what}",
                    "Run repair: it resets blocked and stuck tasks (over its caps it asks "
                    "for approval).",
                )
            )
    if counts["waiting_approval"] >= QUEUE_WAITING_APPROVAL_WARNING:
        problems.append(
            (
                WARNING,
                f"{counts['waiting_approval']} task(s) wait for approval",
                "Decide the pending approvals on the Approvals page.",
            )
        )
    if not problems:
        return Finding(
            "task_queue",
            OK,
            f"{counts['pending']} pending, {counts['running']} running; nothing blocked or stuck.",
            evidence,
        )
    suggestions = list(dict.fromkeys(action for _, _, action in problems))
    return Finding(
        "task_queue",
        _worst(*(severity for severity, _, _ in problems)),
        "; ".join(text for _, text, _ in problems).capitalize() + ".",
        evidence,
        " ".join(suggestions),
    )


def check_error_patterns(now: datetime) -> Finding:
    report = top_error_patterns(limit=ERROR_PATTERN_LIMIT)
    if not report.sources:
        return Finding(
            "error_patterns",
            OK,
            "No error source is registered, so there are no error patterns to check.",
            {"sources": 0, "patterns": 0},
            "None needed; the health monitor registers an error source when it runs.",
        )
    significant = [p for p in report.patterns if p.count >= ERROR_PATTERN_WARNING_COUNT]
    keys = {fix_task_dedupe_key(p.fingerprint): p for p in significant}
    handled = set(
        Task.objects.filter(dedupe_key__in=list(keys), status__in=OPEN_STATUSES).values_list(
            "dedupe_key", flat=True
        )
    )
    without_task = [p for key, p in keys.items() if key not in handled]
    top_count = report.patterns[0].count if report.patterns else 0
    evidence: dict[str, Any] = {
        "sources": report.sources,
        "failed_sources": len(report.failures),
        "patterns": len(report.patterns),
        "errors": sum(p.count for p in report.patterns),
        "top_count": top_count,
        "significant": len(significant),
        "without_fix_task": len(without_task),
        "top": [p.as_evidence() for p in report.patterns[:3]],
    }
    severity = _graded(top_count, ERROR_PATTERN_WARNING_COUNT, ERROR_PATTERN_CRITICAL_COUNT)
    if report.failures:
        severity = _worst(severity, WARNING)
    if severity == OK:
        return Finding(
            "error_patterns",
            OK,
            f"{len(report.patterns)} recent error pattern(s), none frequent.",
            evidence,
        )
    parts = []
    if significant:
        parts.append(
            f"{len(significant)} error pattern(s) seen {ERROR_PATTERN_WARNING_COUNT}+ times "
            f"(top: {top_count})"
        )
    if report.failures:
        parts.append(f"{len(report.failures)} error source(s) failed: {report.failures[0]}")
    action = (
        f"Run repair to open fix tasks for {len(without_task)} pattern(s)."
        if without_task
        else "Fix tasks are open for these patterns; follow them up."
        if significant
        else "Check the failing error source."
    )
    return Finding("error_patterns", severity, "; ".join(parts) + ".", evidence, action)


def check_completion_rate(now: datetime) -> Finding:
    counts = Task.objects.filter(finished_at__gte=now - COMPLETION_WINDOW).aggregate(
        completed=Count("id", filter=Q(status=TaskStatus.COMPLETED)),
        failed=Count("id", filter=Q(status=TaskStatus.FAILED)),
        cancelled=Count("id", filter=Q(status=TaskStatus.CANCELLED)),
    )
    finished = counts["completed"] + counts["failed"]
    rate = counts["completed"] / finished if finished else None
    evidence = {
        **counts,
        "window_h": int(COMPLETION_WINDOW.total_seconds() // 3600),
        "completion_rate_pct": round(rate * 100, 1) if rate is not None else None,
    }
    if rate is None or finished < COMPLETION_MIN_FINISHED:
        return Finding(
            "completion_rate",
            OK,
            f"{finished} task(s) finished in the last 24 h: too few to judge a rate.",
            evidence,
        )
    severity = _graded(rate, COMPLETION_RATE_WARNING, COMPLETION_RATE_CRITICAL, below=True)
    return Finding(
        "completion_rate",
        severity,
        f"{rate:.0%} of {finished} tasks finished in the last 24 h completed "
        f"({counts['failed']} failed).",
        evidence,
        NOTHING_TO_DO
        if severity == OK
        else "Open the failed tasks on the Engine page and read their errors; "
        "repeated errors show up as error patterns.",
    )


@dataclass(frozen=True)
class SystemResources:
    disk_percent: float
    disk_free_gb: float
    memory_percent: float
    load_1m: float
    cpus: int


def read_system_resources() -> SystemResources:
    disk = psutil.disk_usage(str(settings.BASE_DIR))
    load_1m, _, _ = psutil.getloadavg()
    return SystemResources(
        disk_percent=disk.percent,
        disk_free_gb=round(disk.free / 1024**3, 2),
        memory_percent=psutil.virtual_memory().percent,
        load_1m=load_1m,
        cpus=psutil.cpu_count() or os.cpu_count() or 1,
    )


def check_system_resources(now: datetime) -> Finding:
    resources = read_system_resources()
    load_per_cpu = resources.load_1m / max(resources.cpus, 1)
    grades = {
        "disk": _graded(resources.disk_percent, DISK_PERCENT_WARNING, DISK_PERCENT_CRITICAL),
        "memory": _graded(
            resources.memory_percent, MEMORY_PERCENT_WARNING, MEMORY_PERCENT_CRITICAL
        ),
        "load": _graded(load_per_cpu, LOAD_PER_CPU_WARNING, LOAD_PER_CPU_CRITICAL),
    }
    evidence = {
        "disk_used_pct": round(resources.disk_percent, 1),
        "disk_free_gb": resources.disk_free_gb,
        "memory_used_pct": round(resources.memory_percent, 1),
        "load_1m": round(resources.load_1m, 2),
        "cpus": resources.cpus,
        "load_per_cpu": round(load_per_cpu, 2),
    }
    summary = (
        f"Disk {resources.disk_percent:.0f}% used, memory {resources.memory_percent:.0f}% used, "
        f"load {load_per_cpu:.2f} per CPU."
    )
    advice = {
        "disk": "Free disk space (old logs, var/ backups) or grow the volume.",
        "memory": "Find the process using memory, or add memory.",
        "load": "Reduce concurrent work (fewer worker threads) or add CPUs.",
    }
    actions = [advice[name] for name, severity in grades.items() if severity != OK]
    return Finding(
        "system_resources",
        _worst(*grades.values()),
        summary,
        evidence,
        " ".join(actions) or NOTHING_TO_DO,
    )


Check = Callable[[datetime], Finding]

CHECKS: dict[str, tuple[str, Check]] = {
    "database": ("Database connectivity and latency", check_database),
    "worker_heartbeats": ("Worker heartbeats", check_worker_heartbeats),
    "task_queue": ("Task queue health", check_task_queue),
    "error_patterns": ("Recent error patterns", check_error_patterns),
    "completion_rate": ("Task completion rate over 24 hours", check_completion_rate),
    "system_resources": ("System resources", check_system_resources),
}


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
        )
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    return Finding(
        finding.check,
        finding.severity,
        finding.summary,
        {**finding.evidence, "check_ms": elapsed_ms},
        finding.suggested_action,
    )


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
