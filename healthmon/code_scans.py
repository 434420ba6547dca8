"""A code scan's lifecycle: queued, running, then succeeded or failed, moved only by
`_move` along `TRANSITIONS`.

At most one scan of a repository runs at a time (a partial unique constraint); a
scan running past `HEALTHMON_CODE_SCAN_TIMEOUT_SECONDS` counts as failed, so the next
one may start. A scan works on its own checkout and writes its findings in one
transaction at the end: until a scan succeeds, the previous results stay as they
were. Every fault (no repository, git or a tool failing, the time limit) ends the
scan `failed` with its reason.

The checks (`CHECKS`) run one after another. A check that fails fails the scan with
its reason, but the findings of the checks that succeeded are still reconciled, and
the failed check's findings stay as the last scan left them. Each check is told which
files changed since the last scan in which it succeeded (from the file list that scan
kept in the cache), so an incremental scan redoes only what changed. While it runs,
a scan records each check's progress, at most a few times a second, and sends
`scan_changed` (as it does at every move), which the live page listens to.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.dispatch import Signal
from django.utils import timezone

from controlplane.background import stopping
from healthmon import code_checkout, code_findings, code_pull_requests
from healthmon.code_checks import (
    CheckFailed,
    Reported,
    ScanContext,
    ScanInterrupted,
    stop_if_stopping,
)
from healthmon.code_checks import ci_annotations as ci_check
from healthmon.code_checks import contracts as contracts_check
from healthmon.code_checks import dependencies as dependencies_check
from healthmon.code_checks import ruff as ruff_check
from healthmon.code_checks import stale as stale_check
from healthmon.models import Repository, Scan

log = logging.getLogger(__name__)

Status = Scan.Status
TRANSITIONS: dict[str, set[str]] = {
    Status.QUEUED: {Status.RUNNING, Status.FAILED},
    Status.RUNNING: {Status.SUCCEEDED, Status.FAILED},
    Status.SUCCEEDED: set(),
    Status.FAILED: set(),
}


# The checks a scan runs, in order: modules with NAME and run(ScanContext).
CHECKS: tuple[ModuleType, ...] = (
    ruff_check,
    ci_check,
    stale_check,
    contracts_check,
    dependencies_check,
)

# Sent with `scan=` when a scan moves or its progress is recorded.
scan_changed = Signal()

PROGRESS_EVERY_SECONDS = 0.25
# The file lists, and each check's results, kept in a repository's cache (one per
# scanned commit).
FILE_LISTS_KEPT = 5


class ScanRefused(Exception):
    pass


class ScanTimedOut(CheckFailed):
    """The scan as a whole ran past its time limit (not one check's fault)."""


INTERRUPTED = (
    "Interrupted: the process running the scan stopped. The repository is scanned "
    "again at the next scheduled scan (with bin/run, as soon as it starts again)."
)


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
        scan_changed.send(sender=Scan, scan=scan)
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


def queue_scan(repository: Repository) -> Scan:
    """A scan of `repository` waiting for the background (`run_queued_scan`), refused
    while another is queued or running: a second would only fail at its start."""
    fail_overdue_scans()
    with transaction.atomic():
        # The repository's row lock makes two clicks at once queue one scan.
        Repository.objects.select_for_update().filter(pk=repository.pk).first()
        busy = repository.scans.filter(status__in=[Status.QUEUED, Status.RUNNING]).first()
        if busy is not None:
            raise ScanRefused(f"A scan of {repository} is already {busy.status} (#{busy.pk}).")
        scan = Scan.objects.create(repository=repository)
        scan_changed.send(sender=Scan, scan=scan)
    return scan


def run_queued_scan(scan_id: int) -> Scan | None:
    """Run a scan `queue_scan` made; None when it is gone or no longer queued (the
    time-limit sweep failed it, or a second delivery of the task)."""
    scan = Scan.objects.select_related("repository").filter(pk=scan_id).first()
    if scan is None or scan.status != Status.QUEUED:
        return None
    return scan_repository(scan.repository, scan)


def scan_repository(repository: Repository, scan: Scan | None = None) -> Scan:
    """Scan `repository` now (as `scan` when one was queued) and return the finished
    scan (succeeded or failed)."""
    fail_overdue_scans()
    if scan is None:
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
    except Exception as error:
        if isinstance(error, ScanInterrupted) or stopping():
            # The process stops (Ctrl-C, SIGTERM): whatever failed on the way out (a
            # pool that takes no more work, a tool killed with its process group) is
            # the exit's doing. Nothing of the scan was kept; no fix is proposed.
            log.info(
                "Code scan #%s of %s interrupted: the process is stopping", scan.pk, repository
            )
            _move(scan, Status.FAILED, error=INTERRUPTED)
            return scan
        if isinstance(error, CheckFailed):
            _move(scan, Status.FAILED, error=str(error))
        else:  # a bug in a check must not leave the scan running
            log.exception("Code scan #%s of %s crashed", scan.pk, repository)
            _move(scan, Status.FAILED, error=f"The scan crashed: {type(error).__name__}: {error}")
    code_pull_requests.after_scan(scan)  # refresh this repository's PRs; propose fixes
    return scan


def _run(scan: Scan, repository: Repository) -> None:
    deadline = time.monotonic() + settings.HEALTHMON_CODE_SCAN_TIMEOUT_SECONDS

    def remaining() -> float:
        stop_if_stopping()
        left = deadline - time.monotonic()
        if left <= 0:
            raise ScanTimedOut("The scan ran past its time limit.")
        return left

    tree = code_checkout.checkout(repository, remaining())
    files = code_checkout.tracked_files(tree.path, remaining())
    cache = code_checkout.cache_path(repository)
    _keep_file_list(cache, tree.commit, files)
    Scan.objects.filter(pk=scan.pk).update(
        commit=tree.commit, branch=tree.branch, files_total=len(files)
    )
    scan.commit, scan.branch, scan.files_total = tree.commit, tree.branch, len(files)
    progress = _Progress(scan, [check.NAME for check in CHECKS])
    reported: dict[str, list[Reported]] = {}
    errors: dict[str, str] = {}
    states: dict[str, Any] = {}
    for check in CHECKS:
        last = _last_success_of(repository, check.NAME)
        context = ScanContext(
            repository=repository,
            path=tree.path,
            commit=tree.commit,
            files=files,
            changed=_changed_since(cache, last, files),
            cache=cache / check.NAME,
            previous_state=(last.state.get("checks", {}).get(check.NAME, {}) if last else {}),
            deadline=deadline,
            report_progress=progress.reporter(check.NAME),
        )
        try:
            reported[check.NAME] = check.run(context)
        except ScanTimedOut:
            raise
        except CheckFailed as error:
            errors[check.NAME] = str(error)
            continue
        states[check.NAME] = context.state
        progress.finish(check.NAME)
        _prune_results(context.cache)
    if errors and stopping():
        raise ScanInterrupted("A check failed as the process running the scan stopped.")
    with transaction.atomic():
        summary: dict[str, Any] = code_findings.reconcile(scan, repository, reported)
        summary.update({name: {"error": error} for name, error in errors.items()})
        fields: dict[str, Any] = {
            "commit": tree.commit,
            "branch": tree.branch,
            "files_scanned": len(files),
            "files_total": len(files),
            "summary": summary,
            "progress": progress.done,
            "state": {"checks": states},
            "score": code_findings.open_score(repository),
        }
        if errors:
            failed = "; ".join(f"{name}: {error}" for name, error in errors.items())
            moved = _move(scan, Status.FAILED, error=failed, **fields)
        else:
            moved = _move(scan, Status.SUCCEEDED, **fields)
        if not moved:
            # Failed by the time-limit sweep meanwhile: keep the previous results.
            transaction.set_rollback(True)


class _Progress:
    """Each check's [done, total], written to the scan (and announced) at most every
    PROGRESS_EVERY_SECONDS; files_scanned is the share done of the tracked files."""

    def __init__(self, scan: Scan, checks: list[str]) -> None:
        self.scan = scan
        self.done: dict[str, list[int]] = {name: [0, 0] for name in checks}
        self.written = 0.0

    def reporter(self, check: str) -> Any:
        def report(done: int, total: int) -> None:
            self.done[check] = [max(0, done), max(0, total)]
            if time.monotonic() - self.written >= PROGRESS_EVERY_SECONDS:
                self.write()

        return report

    def finish(self, check: str) -> None:
        total = self.done[check][1] or 1
        self.done[check] = [total, total]
        self.write()

    def write(self) -> None:
        self.written = time.monotonic()
        shares = [done / total if total else 0.0 for done, total in self.done.values()]
        share = sum(shares) / len(shares) if shares else 0.0
        scanned = min(self.scan.files_total, round(self.scan.files_total * share))
        Scan.objects.filter(pk=self.scan.pk, status=Status.RUNNING).update(
            progress=self.done, files_scanned=scanned
        )
        self.scan.progress, self.scan.files_scanned = dict(self.done), scanned
        scan_changed.send(sender=Scan, scan=self.scan)


def _last_success_of(repository: Repository, check: str) -> Scan | None:
    """The latest scan in which `check` succeeded (its state and commit)."""
    recent = repository.scans.filter(status__in=[Status.SUCCEEDED, Status.FAILED]).only(
        "pk", "commit", "state"
    )[:20]
    for scan in recent:
        if check in (scan.state or {}).get("checks", {}):
            return scan
    return None


def _file_list_path(cache: Path, commit: str) -> Path:
    return cache / "file-lists" / f"{commit}.json"


def _keep_file_list(cache: Path, commit: str, files: dict[str, str]) -> None:
    folder = cache / "file-lists"
    folder.mkdir(parents=True, exist_ok=True)
    draft = folder / f".{commit}.tmp"
    draft.write_text(json.dumps(files), encoding="utf-8")
    draft.replace(_file_list_path(cache, commit))
    _keep_newest(folder, "*.json")


def _prune_results(folder: Path) -> None:
    """A check's results kept per commit (`results-<commit>`): the newest few stay
    (the one just stored is what its next incremental run starts from)."""
    _keep_newest(folder, "results-*.json")


def _keep_newest(folder: Path, pattern: str) -> None:
    """Of the files matching `pattern` in `folder`, the FILE_LISTS_KEPT newest stay."""
    kept = sorted(folder.glob(pattern), key=lambda path: path.stat().st_mtime, reverse=True)
    for old in kept[FILE_LISTS_KEPT:]:
        old.unlink(missing_ok=True)


def _changed_since(cache: Path, last: Scan | None, files: dict[str, str]) -> frozenset[str] | None:
    """The files added, changed or removed since `last`; None (a full scan) without
    a last scan or its file list."""
    if last is None or not last.commit:
        return None
    try:
        before = json.loads(_file_list_path(cache, last.commit).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(before, dict):
        return None
    names = set(before) | set(files)
    return frozenset(name for name in names if before.get(name) != files.get(name))


def scan_all(name: str | None = None) -> list[Scan]:
    repositories = Repository.objects.filter(enabled=True)
    if name is not None:
        repositories = Repository.objects.filter(name=name)
    return [scan_repository(repository) for repository in repositories]
