"""What a scan's reports do to the stored findings, and to their tasks.

A reported problem is new (a finding is created, or a fixed one reopens), still open
(its location and message are refreshed), intended (an Operator said it is meant to
be so) or ignored (an Operator chose not to fix it): the last two stay as they are.
An open finding no longer reported is fixed. Findings at
or above `HEALTHMON_CODE_TASK_MIN_SEVERITY` open one selfheal task each, keyed by the
finding, and the task is cancelled with the reason when the finding is fixed or marked
intended: the loop closes by itself.
"""

from __future__ import annotations

import contextlib

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone

from controlplane import audit
from controlplane.tiers import StaffUser
from healthmon.code_checks import Reported
from healthmon.models import Finding, Repository, Scan
from selfheal.engine import TransitionRefused, create_task, transition
from selfheal.models import OPEN_STATUSES, Task, TaskStatus

FIX_CODE_TASK_KIND = "fix_code_finding"


def reconcile(
    scan: Scan, repository: Repository, reported: dict[str, list[Reported]]
) -> dict[str, dict[str, int]]:
    """Apply one scan's reports (by check) to the findings; the per-check summary."""
    now = timezone.now()
    summary: dict[str, dict[str, int]] = {}
    for check, items in reported.items():
        stored = {
            f.identity: f
            for f in repository.findings.filter(check_name=check).select_related("task")
        }
        counts = {
            "reported": len(items),
            "new": 0,
            "open": 0,
            "fixed": 0,
            "intended": 0,
            "ignored": 0,
        }
        seen = set()
        for item in items:
            seen.add(item.identity)
            finding = stored.get(item.identity)
            if finding is None:
                finding = Finding(
                    repository=repository,
                    check_name=check,
                    rule=item.rule,
                    identity=item.identity,
                    first_seen_scan=scan,
                    first_seen_at=now,
                )
                counts["new"] += 1
            elif finding.status == Finding.Status.FIXED:
                finding.status, finding.fixed_at = Finding.Status.OPEN, None
                counts["new"] += 1
            elif finding.status == Finding.Status.OPEN:
                counts["open"] += 1
            else:
                counts[finding.status] += 1
            finding.severity, finding.message = item.severity, item.message
            finding.file, finding.line = item.file, item.line
            finding.last_seen_scan, finding.last_seen_at = scan, now
            finding.save()
            if finding.status == Finding.Status.OPEN:
                open_task(finding)
        for identity, finding in stored.items():
            if identity not in seen and finding.status == Finding.Status.OPEN:
                finding.status, finding.fixed_at = Finding.Status.FIXED, now
                finding.save(update_fields=["status", "fixed_at"])
                counts["fixed"] += 1
                close_task(finding, f"Fixed: scan #{scan.pk} no longer reports it.")
        summary[check] = counts
    return summary


def task_min_severity() -> int:
    """The setting's severity; a name that is not one is a configuration error (the
    scan fails saying so rather than open tasks at a guessed threshold)."""
    name = str(settings.HEALTHMON_CODE_TASK_MIN_SEVERITY).strip().lower()
    for value, label in Finding.Severity.choices:
        if label == name:
            return int(value)
    names = ", ".join(str(label) for _, label in Finding.Severity.choices)
    raise ImproperlyConfigured(
        f"HEALTHMON_CODE_TASK_MIN_SEVERITY={name!r} is not a severity: use {names}."
    )


def dedupe_key(finding: Finding) -> str:
    return f"code-finding:{finding.repository_id}:{finding.identity}"


def open_task(finding: Finding) -> Task | None:
    if finding.severity < task_min_severity():
        return None
    if finding.task is not None and finding.task.status in OPEN_STATUSES:
        return finding.task
    task = create_task(
        title=f"Fix {finding.rule} in {finding.file}: {finding.message[:100]}",
        kind=FIX_CODE_TASK_KIND,
        payload={
            "finding_id": finding.pk,
            "repository": finding.repository.name,
            "check": finding.check_name,
            "rule": finding.rule,
            "file": finding.file,
            "line": finding.line,
            "message": finding.message,
        },
        source=Task.Source.HEALTHMON,
        dedupe_key=dedupe_key(finding),
    )
    Finding.objects.filter(pk=finding.pk).update(task=task)
    finding.task = task
    return task


def close_task(finding: Finding, reason: str) -> None:
    task = finding.task
    if task is None or task.status not in OPEN_STATUSES:
        return
    # It may have finished or been cancelled meanwhile: then nothing is left to close.
    with contextlib.suppress(TransitionRefused):
        transition(task, TaskStatus.CANCELLED, reason=reason)


def mark_intended(finding: Finding, *, actor: StaffUser | None = None) -> None:
    """An Operator says the finding is meant to be so: later scans keep it intended."""
    _set_status(finding, Finding.Status.INTENDED, actor)
    close_task(finding, "The finding was marked intended.")


def mark_ignored(finding: Finding, *, actor: StaffUser | None = None) -> None:
    """An Operator chose not to fix it: later scans keep it ignored, and it opens no task."""
    _set_status(finding, Finding.Status.IGNORED, actor)
    close_task(finding, "The finding was marked ignored.")


def reopen(finding: Finding, *, actor: StaffUser | None = None) -> None:
    _set_status(finding, Finding.Status.OPEN, actor)
    open_task(finding)


def _set_status(finding: Finding, to: str, actor: StaffUser | None) -> None:
    before = finding.status
    with transaction.atomic():
        Finding.objects.filter(pk=finding.pk).update(status=to, fixed_at=None)
        finding.status, finding.fixed_at = to, None
        audit.record(
            f"finding.{to}",
            finding,
            before={"status": before},
            after={"status": to},
            actor=actor,
        )
