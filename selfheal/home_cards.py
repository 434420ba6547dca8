"""Home's engine card: the task queue by status, workers online, the tasks stuck or
waiting and the oldest pending one, and the latest diagnosis with its worst severity;
and the diagnosis as a verdict for Home's System health (a critical diagnosis is never
shown beside an all-green card). The engine and the playbooks already publish their
changes on the engine's group; the card listens there."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.urls import reverse
from django.utils import timezone

from controlplane.home.cards import for_everyone, refresh_on, register_home_card
from controlplane.home.changes import each_object, register_object_pages
from controlplane.home.health import Verdict, register_health_judge
from selfheal.dashboard import attention_tasks, latest_report, queue_counts, worker_rows
from selfheal.engine import ENGINE_CHANGED, ENGINE_GROUP
from selfheal.models import Task, TaskStatus
from selfheal.playbooks.events import EXECUTION_EVENT
from selfheal.playbooks.findings import CRITICAL, OK

ATTENTION_LIMIT = 5
PROBLEMS_LISTED = 3


def engine_context(now: datetime | None = None) -> dict[str, Any]:
    """A fixed number of queries: the counts, the workers, the attention list and its
    count, the oldest pending task and the latest diagnosis."""
    now = now or timezone.now()
    workers = worker_rows(now)
    attention = attention_tasks(now).order_by("updated_at", "id")
    oldest_pending = (
        Task.objects.filter(status=TaskStatus.PENDING).order_by("created_at", "id").first()
    )
    return {
        "queue": queue_counts(),
        "workers_online": sum(1 for row in workers if row["live"]),
        "workers_total": len(workers),
        "attention": list(attention[:ATTENTION_LIMIT]),
        "attention_count": attention.count(),
        "oldest_pending": oldest_pending,
        "diagnosis": latest_report(),
        "now": now,
    }


def diagnosis_verdict() -> Verdict | None:
    """The latest diagnosis (or repair) as System health judges it; None before the
    first one."""
    report = latest_report()
    if report is None:
        return None
    execution = report["execution"]
    problems = sorted(
        (f for f in report["findings"] if f.get("severity", OK) != OK),
        key=lambda f: f.get("severity") != CRITICAL,
    )
    return Verdict(
        source=f"{execution.playbook.capitalize()} #{execution.pk}",
        severity=report["severity"],
        summary=execution.summary,
        url=f"{reverse('selfheal:index')}#selfheal-report",
        problems=[f"{f['title']}: {f.get('summary', '')}" for f in problems[:PROBLEMS_LISTED]],
    )


def register() -> None:
    """Called once from the app's ready()."""
    register_home_card(
        "engine",
        "selfheal/partials/home_engine.html",
        for_everyone(engine_context),
        order=50,
        events=(ENGINE_CHANGED, EXECUTION_EVENT),
        groups=(ENGINE_GROUP,),
        ages=True,
    )
    register_health_judge("diagnosis", diagnosis_verdict)
    refresh_on("system_health", events=(EXECUTION_EVENT,), groups=(ENGINE_GROUP,))
    register_object_pages(
        "selfheal", "task", each_object(lambda pk: f"{reverse('selfheal:engine')}#task-{pk}")
    )
    register_object_pages(
        "selfheal",
        "playbookexecution",
        each_object(lambda pk: f"{reverse('selfheal:index')}#execution-{pk}"),
    )
