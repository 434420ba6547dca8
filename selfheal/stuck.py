"""The stuck detector: work whose worker went silent, or whose lease ran out, goes
back in the queue (or fails, when its attempts are used up).

Run periodically (`bin/manage detect_stuck`, the Celery beat task); every move it
makes goes through the engine, so it is audited and published like any other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Q
from django.utils import timezone

from selfheal.engine import mark_offline, release_leases, requeue_lost, silence_limit
from selfheal.models import Task, TaskStatus, Worker


@dataclass
class StuckReport:
    requeued: list[Task] = field(default_factory=list)
    failed: list[Task] = field(default_factory=list)
    offline: list[Worker] = field(default_factory=list)

    def add(self, task: Task | None) -> None:
        if task is not None:
            (self.failed if task.status == TaskStatus.FAILED else self.requeued).append(task)

    @property
    def changed_anything(self) -> bool:
        return bool(self.requeued or self.failed or self.offline)


def detect_stuck(now: datetime | None = None) -> StuckReport:
    """Silent workers go offline with their leases released; running tasks past their
    lease go back to pending (or fail when out of attempts)."""
    now = now or timezone.now()
    report = StuckReport()
    unheard = Q(last_heartbeat__lt=now - silence_limit()) | Q(last_heartbeat__isnull=True)
    for worker in Worker.objects.exclude(status=Worker.Status.OFFLINE).filter(unheard):
        since = f"since {worker.last_heartbeat:%Y-%m-%d %H:%M:%S}" if worker.last_heartbeat else ""
        reason = f"no heartbeat {since}".strip() + "."
        if mark_offline(worker, reason, where=unheard):  # unless it just beat
            report.offline.append(worker)
            for task in release_leases(worker, reason):
                report.add(task)
    expired = Task.objects.filter(status=TaskStatus.RUNNING, lease_expires_at__lt=now)
    for task in expired.select_related("lease_worker"):
        holder = task.lease_worker.name if task.lease_worker else "its worker"
        reason = (
            f"The lease expired at {task.lease_expires_at:%H:%M:%S}: {holder} stopped renewing it."
        )
        report.add(requeue_lost(task, reason, where=Q(lease_expires_at__lt=now)))
    return report
