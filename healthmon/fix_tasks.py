"""Work for the engine: a new error pattern opens one selfheal task to fix it.

Ingest names the fingerprints that became worth a task (level and count at least
`HEALTHMON_TASK_MIN_LEVEL` and `HEALTHMON_TASK_MIN_COUNT`, not ignored, no task yet);
`open_fix_tasks` runs in the background just after the batch commits. The task's
de-duplication key is selfheal's `fix_task_dedupe_key(fingerprint)`, the key the
repair playbook uses too, so a pattern has at most one open task whoever opens it.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from controlplane.background import enqueue
from healthmon.levels import Level
from healthmon.models import Fingerprint
from selfheal.engine import create_task
from selfheal.error_patterns import fix_task_dedupe_key
from selfheal.models import Task
from selfheal.playbooks.executor import FIX_TASK_KIND


def open_fix_tasks_later(fingerprint_ids: list[int]) -> None:
    from healthmon.tasks import open_fix_tasks as task

    enqueue(task, fingerprint_ids)


def open_fix_tasks(fingerprint_ids: Iterable[int]) -> list[Task]:
    opened = []
    for row in Fingerprint.objects.filter(pk__in=list(fingerprint_ids), task__isnull=True):
        with transaction.atomic():
            task = create_task(
                title=f"Fix error in {row.service}: {row.template[:120]}",
                kind=FIX_TASK_KIND,
                payload={"error_pattern": pattern_of(row), "fingerprint_id": row.pk},
                source=Task.Source.HEALTHMON,
                dedupe_key=fix_task_dedupe_key(row.ref),
            )
            Fingerprint.objects.filter(pk=row.pk, task__isnull=True).update(task=task)
        opened.append(task)
    return opened


def pattern_of(row: Fingerprint, count: int | None = None) -> dict[str, object]:
    """A fingerprint as selfheal's error patterns read (`selfheal.error_patterns`)."""
    return {
        "fingerprint": row.ref,
        "message": row.template,
        "count": row.count if count is None else count,
        "last_seen": row.last_seen.isoformat(),
        "service": row.service,
        "level": Level(row.level).label,
    }
