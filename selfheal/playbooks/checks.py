"""The six diagnosis checks: each reads aggregates (one or two queries, never a
loop over tasks) and returns a `Finding` with a severity, evidence (numbers), a
suggested action and whether that action needs a person.

Thresholds are the module constants below; a test or a deployment can change them.
`selfheal.playbooks.diagnose` runs the checks under a deadline.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import median
from typing import Any, NamedTuple

import psutil
from django.conf import settings
from django.db import connection
from django.db.models import Count, Min, Q

from selfheal import task_kinds
from selfheal.engine import silence_limit
from selfheal.error_patterns import fix_task_dedupe_key, top_error_patterns
from selfheal.models import OPEN_STATUSES, Task, TaskStatus, Worker
from selfheal.playbooks.findings import CRITICAL, NOTHING_TO_DO, OK, WARNING, Finding, worst

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
            needs_person=True,
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
        needs_person=severity != OK,
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
    # A person's to-do waits for a person, not a worker: it needs no worker alive.
    pending = (
        Task.objects.filter(status=TaskStatus.PENDING)
        .exclude(kind__in=task_kinds.person_kinds())
        .exists()
    )
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
            "Start a worker (bin/manage run_worker --capabilities ...) or check why "
            "the workers stopped.",
            needs_person=True,
        )
    if counts["silent"]:
        return Finding(
            "worker_heartbeats",
            WARNING,
            f"{counts['silent']} worker(s) not marked offline have been silent for more "
            f"than {stale_after} s.",
            evidence,
            "Run bin/manage detect_stuck to release their leases, then restart those workers.",
            needs_person=True,
        )
    if counts["registered"] and counts["live"] == 0:
        return Finding(
            "worker_heartbeats",
            WARNING,
            "No worker is live (nothing is pending yet).",
            evidence,
            "Start a worker before work arrives.",
            needs_person=True,
        )
    return Finding(
        "worker_heartbeats",
        OK,
        f"{counts['live']} live worker(s) of {counts['registered']} registered."
        if counts["registered"]
        else "No workers are registered and no work is waiting.",
        evidence,
    )


class Problem(NamedTuple):
    """One thing wrong with the queue, and whether its action is a person's to take."""

    severity: str
    text: str
    action: str
    by_person: bool


def check_task_queue(now: datetime) -> Finding:
    # A person's to-do is not stuck however long it waits: it is counted apart.
    for_a_person = Q(kind__in=task_kinds.person_kinds())
    for_a_worker = Q(status=TaskStatus.PENDING) & ~for_a_person
    counts = Task.objects.filter(status__in=OPEN_STATUSES).aggregate(
        pending=Count("id", filter=for_a_worker),
        oldest_pending=Min("created_at", filter=for_a_worker),
        waiting_for_a_person=Count("id", filter=Q(status=TaskStatus.PENDING) & for_a_person),
        running=Count("id", filter=Q(status=TaskStatus.RUNNING)),
        stuck_running=Count("id", filter=Q(status=TaskStatus.RUNNING, lease_expires_at__lt=now)),
        blocked=Count("id", filter=Q(status=TaskStatus.BLOCKED)),
        waiting_approval=Count("id", filter=Q(status=TaskStatus.WAITING_APPROVAL)),
    )
    oldest_age = _age_seconds(now, counts["oldest_pending"])
    evidence = {
        "pending": counts["pending"],
        "oldest_pending_age_s": oldest_age,
        "waiting_for_a_person": counts["waiting_for_a_person"],
        "running": counts["running"],
        "stuck_running": counts["stuck_running"],
        "blocked": counts["blocked"],
        "waiting_approval": counts["waiting_approval"],
    }
    problems: list[Problem] = []
    if oldest_age is not None:
        severity = _graded(
            oldest_age,
            QUEUE_PENDING_AGE_WARNING.total_seconds(),
            QUEUE_PENDING_AGE_CRITICAL.total_seconds(),
        )
        if severity != OK:
            problems.append(
                Problem(
                    severity,
                    f"the oldest pending task has waited {oldest_age // 60} min",
                    "Check that a live worker has the capabilities the pending tasks need.",
                    by_person=True,
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
                Problem(
                    severity,
                    f"{counts[name]} task(s) {what}",
                    "Run repair: it resets blocked and stuck tasks (over its caps it asks "
                    "for approval).",
                    by_person=False,  # the repair playbook resets them
                )
            )
    if counts["waiting_approval"] >= QUEUE_WAITING_APPROVAL_WARNING:
        problems.append(
            Problem(
                WARNING,
                f"{counts['waiting_approval']} task(s) wait for approval",
                "Decide the pending approvals on the Approvals page.",
                by_person=True,
            )
        )
    if not problems:
        return Finding(
            "task_queue",
            OK,
            f"{counts['pending']} pending, {counts['running']} running; nothing blocked or stuck."
            + (
                f" {counts['waiting_for_a_person']} to-do(s) wait for a person."
                if counts["waiting_for_a_person"]
                else ""
            ),
            evidence,
        )
    suggestions = list(dict.fromkeys(problem.action for problem in problems))
    return Finding(
        "task_queue",
        worst(*(problem.severity for problem in problems)),
        "; ".join(problem.text for problem in problems).capitalize() + ".",
        evidence,
        " ".join(suggestions),
        needs_person=any(problem.by_person for problem in problems),
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
        severity = worst(severity, WARNING)
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
    # Patterns without a fix task: repair opens them. Otherwise a person follows up
    # the open fix tasks, or looks at the failing source.
    action = (
        f"Run repair to open fix tasks for {len(without_task)} pattern(s)."
        if without_task
        else "Fix tasks are open for these patterns; follow them up."
        if significant
        else "Check the failing error source."
    )
    return Finding(
        "error_patterns",
        severity,
        "; ".join(parts) + ".",
        evidence,
        action,
        needs_person=not without_task,
    )


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
        needs_person=severity != OK,
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
        worst(*grades.values()),
        summary,
        evidence,
        " ".join(actions) or NOTHING_TO_DO,
        needs_person=bool(actions),
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
