"""A code scan's lifecycle: queued, running, then succeeded or failed, moved only by
`_move` along `TRANSITIONS`.

At most one scan of a repository runs at a time (a partial unique constraint); a
scan running past `HEALTHMON_CODE_SCAN_TIMEOUT_SECONDS` counts as failed, so the next
one may start. A scan works on its own checkout and writes its findings in one
transaction at the end: until a scan succeeds, the previous results stay as they
were. Every fault (no repository, git or a tool failing, the time limit) ends the
scan `failed` with its reason.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from healthmon import code_checkout, code_findings
from healthmon.code_checks import CheckFailed, Reported
from healthmon.code_checks import ruff as ruff_check
from healthmon.models import Repository, Scan

log = logging.getLogger(__name__)

Status = Scan.Status
TRANSITIONS: dict[str, set[str]] = {
    Status.QUEUED: {Status.RUNNING, Status.FAILED},
    Status.RUNNING: {Status.SUCCEEDED, Status.FAILED},
    Status.SUCCEEDED: set(),
    Status.FAILED: set(),
}


class ScanRefused(Exception):
    pass


def time_limit() -> timedelta:
    return timedelta(seconds=settings.HEALTHMON_CODE_SCAN_TIMEOUT_SECONDS)


def _move(scan: Scan, to: str, **fields: Any) -> bool:
    """Move `scan` to `to` if it is still where it was; False when it was not (a
    sweep failed it meanwhile). The running-scan constraint may refuse a start."""
    old = scan.status
    if to not in TRANSITIONS[old]:
        raise ScanRefused(f"Scan #{scan.pk} is {old} and cannot become {to}.")
    now = timezone.now()
    if to == Status.RUNNING:
        fields["started_at"] = now
    elif to in (Status.SUCCEEDED, Status.FAILED):
        fields["finished_at"] = now
    with transaction.atomic():
        moved = Scan.objects.filter(pk=scan.pk, status=old).update(status=to, **fields)
    if moved:
        scan.status = to
        for name, value in fields.items():
            setattr(scan, name, value)
    return bool(moved)


def fail_overdue_scans() -> int:
    """Scans past the time limit (their worker died or hung) fail, freeing the
    repository for the next scan."""
    cutoff = timezone.now() - time_limit()
    overdue = Scan.objects.filter(
        Q(status=Status.RUNNING, started_at__lt=cutoff)
        | Q(status=Status.QUEUED, created_at__lt=cutoff)
    )
    failed = 0
    for scan in overdue:
        limit = settings.HEALTHMON_CODE_SCAN_TIMEOUT_SECONDS
        failed += _move(scan, Status.FAILED, error=f"Did not finish within the {limit} s limit.")
    return failed


def scan_repository(repository: Repository) -> Scan:
    """Scan `repository` now and return the finished scan (succeeded or failed)."""
    fail_overdue_scans()
    scan = Scan.objects.create(repository=repository)
    try:
        started = _move(scan, Status.RUNNING)
    except IntegrityError:
        started = False
    if not started:
        running = Scan.objects.filter(repository=repository, status=Status.RUNNING).first()
        which = f"#{running.pk}" if running else "just now"
        _move(scan, Status.FAILED, error=f"Another scan of this repository is running ({which}).")
        return scan
    try:
        _run(scan, repository)
    except CheckFailed as error:
        _move(scan, Status.FAILED, error=str(error))
    except Exception as error:  # a bug in a check must not leave the scan running
        log.exception("Code scan #%s of %s crashed", scan.pk, repository)
        _move(scan, Status.FAILED, error=f"The scan crashed: {type(error).__name__}: {error}")
    return scan


def _run(scan: Scan, repository: Repository) -> None:
    deadline = time.monotonic() + settings.HEALTHMON_CODE_SCAN_TIMEOUT_SECONDS

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise CheckFailed("The scan ran past its time limit.")
        return left

    tree = code_checkout.checkout(repository, remaining())
    total = sum(1 for path in tree.path.rglob("*.py") if ".git" not in path.parts)
    Scan.objects.filter(pk=scan.pk).update(
        commit=tree.commit, branch=tree.branch, files_total=total
    )
    reported: dict[str, list[Reported]] = {ruff_check.NAME: ruff_check.run(tree.path, remaining())}
    with transaction.atomic():
        summary = code_findings.reconcile(scan, repository, reported)
        if not _move(
            scan,
            Status.SUCCEEDED,
            commit=tree.commit,
            branch=tree.branch,
            files_scanned=total,
            files_total=total,
            summary=summary,
        ):
            # Failed by the time-limit sweep meanwhile: keep the previous results.
            transaction.set_rollback(True)


def scan_all(name: str | None = None) -> list[Scan]:
    repositories = Repository.objects.filter(enabled=True)
    if name is not None:
        repositories = Repository.objects.filter(name=name)
    return [scan_repository(repository) for repository in repositories]
