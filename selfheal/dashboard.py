"""What the Self-heal and Engine pages show, for the views (full page) and the
consumer (live fragments) alike, so the two cannot drift.

Every list is bounded and read with a fixed number of queries however many tasks,
workers or executions there are.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from selfheal import task_kinds
from selfheal.engine import CLAIM_ORDER, silence_limit
from selfheal.models import PlaybookExecution, Task, TaskStatus, Worker
from selfheal.playbooks import playbooks
from selfheal.playbooks.checks import CHECKS
from selfheal.playbooks.findings import needs_a_person

HISTORY_LIMIT = 20
ATTENTION_LIMIT = 50
FAILED_LIMIT = 10
FAILED_WINDOW = timedelta(hours=24)
WORKER_LIMIT = 100
REPORT_PLAYBOOKS = ("diagnose", "repair")


# --- the Self-heal page ------------------------------------------------------------------


def latest_report() -> dict[str, Any] | None:
    execution = (
        PlaybookExecution.objects.filter(playbook__in=REPORT_PLAYBOOKS)
        .exclude(status=PlaybookExecution.Status.RUNNING)
        .select_related("started_by")
        .first()
    )
    if execution is None:
        return None
    found = [_shown(finding) for finding in execution.findings]
    verified = execution.verified_findings
    # After a repair, the card shows the state it left: the diagnosis it ran after its
    # changes, each finding saying what it was before (a resolved warning reads
    # "was warning", not as a warning still there). What it found first is kept apart.
    if verified is not None:
        before = {f.get("check"): f.get("severity") for f in execution.findings}
        findings = [
            {**_shown(finding), "was": before.get(finding.get("check"))} for finding in verified
        ]
    else:
        findings = found
    changes = [
        a for a in execution.actions if a.get("action") not in ("step", "read") and a.get("action")
    ]
    return {
        "execution": execution,
        "severity": execution.severity_now,
        "verified": verified is not None,
        "before_repair": found if verified is not None else [],
        "findings": findings,
        "manual": [f for f in findings if f["manual"]],
        "changes": changes,
        "approvals": [a for a in changes if a["action"] == "request_approval" and a["performed"]],
        "verification": execution.verification or {},
    }


def _shown(finding: dict[str, Any]) -> dict[str, Any]:
    return {
        **finding,
        "title": CHECKS.get(finding.get("check", ""), (finding.get("check", ""),))[0],
        "manual": needs_a_person(finding),
    }


def execution_history() -> list[PlaybookExecution]:
    return list(
        PlaybookExecution.objects.select_related("started_by", "rolled_back_by")[:HISTORY_LIMIT]
    )


# The contexts are the same for every viewer: the templates ask `perms` what the
# viewer may do (the consumer passes it, as the context processor does for a page).


def report_context() -> dict[str, Any]:
    return {"report": latest_report()}


def history_context() -> dict[str, Any]:
    return {"executions": execution_history()}


def index_context() -> dict[str, Any]:
    return {
        **report_context(),
        **history_context(),
        "playbooks": playbooks(),
    }


# --- the Engine page ----------------------------------------------------------------------


def queue_counts() -> list[dict[str, Any]]:
    """Every status with its count, in the order a task moves through them (one query)."""
    counts = Task.objects.aggregate(
        **{status: Count("id", filter=Q(status=status)) for status in TaskStatus.values}
    )
    return [
        {"status": status, "label": label, "count": counts[status]}
        for status, label in TaskStatus.choices
    ]


def worker_rows(now: datetime) -> list[dict[str, Any]]:
    workers = (
        Worker.objects.filter(revoked_at__isnull=True)
        .annotate(running=Count("leased_tasks", filter=Q(leased_tasks__status=TaskStatus.RUNNING)))
        .order_by("name")[:WORKER_LIMIT]
    )
    cutoff = now - silence_limit()
    rows = []
    for worker in workers:
        beat = worker.last_heartbeat
        rows.append(
            {
                "worker": worker,
                "age_s": None if beat is None else max(int((now - beat).total_seconds()), 0),
                "live": worker.status == Worker.Status.ONLINE
                and beat is not None
                and beat >= cutoff,
                "running": worker.running,
            }
        )
    return rows


def attention_tasks(now: datetime) -> Any:
    """Stuck (running past their lease) and waiting (blocked, waiting for approval)."""
    return Task.objects.filter(
        Q(status=TaskStatus.RUNNING, lease_expires_at__lt=now)
        | Q(status__in=[TaskStatus.BLOCKED, TaskStatus.WAITING_APPROVAL])
    ).select_related("lease_worker")


def engine_queue_context(now: datetime | None = None) -> dict[str, Any]:
    return {"queue": queue_counts()}


def engine_workers_context(now: datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    return {
        "workers": worker_rows(now),
        "stale_after_s": int(silence_limit().total_seconds()),
        "site_url": settings.SITE_URL,  # what an external worker's --api points at
        "now": now,
    }


def engine_attention_context(now: datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    attention = attention_tasks(now)
    failed = Task.objects.filter(
        status=TaskStatus.FAILED, finished_at__gte=now - FAILED_WINDOW
    ).order_by("-finished_at", "-id")
    todos = Task.objects.filter(
        status=TaskStatus.PENDING, kind__in=task_kinds.person_kinds()
    ).order_by(*CLAIM_ORDER)
    return {
        "attention": list(attention[:ATTENTION_LIMIT]),
        "attention_count": attention.count(),
        "failed": list(failed[:FAILED_LIMIT]),
        "todos": list(todos[:ATTENTION_LIMIT]),
        "todo_count": todos.count(),
        "now": now,
    }


def engine_context() -> dict[str, Any]:
    now = timezone.now()
    return {
        **engine_queue_context(now),
        **engine_workers_context(now),
        **engine_attention_context(now),
    }


# --- the chat bots' /status ---------------------------------------------------------------


def status_lines(user: Any) -> list[str]:
    """The engine's queue by status (the statuses with tasks) and its workers online."""
    counts = [row for row in queue_counts() if row["count"]]
    queue = ", ".join(f"{row['count']} {row['label'].lower()}" for row in counts) or "empty"
    workers = worker_rows(timezone.now())
    live = sum(1 for row in workers if row["live"])
    return [f"Engine queue: {queue}.", f"Workers: {live} online of {len(workers)}."]
