from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django.utils import timezone

from healthmon import code_findings
from healthmon.code_scans import scan_repository
from healthmon.models import Finding, Repository, Scan
from selfheal.models import Task
from tests.healthmon.code_repos import CLEAN, UNUSED_IMPORT, commit, git, make_repository

pytestmark = pytest.mark.usefixtures("ruff_only")


@pytest.fixture(autouse=True)
def _code_settings(settings: Any, tmp_path: Path) -> None:
    settings.HEALTHMON_CODE_WORKDIR = tmp_path / "work"
    settings.HEALTHMON_CODE_TASK_MIN_SEVERITY = "medium"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return make_repository(tmp_path / "app", {"app.py": UNUSED_IMPORT})


@pytest.fixture
def repository(db: Any, source: Path) -> Repository:
    return Repository.objects.create(name="app", path=str(source))


def test_a_scan_finds_an_unused_import_and_opens_one_task(
    repository: Repository, source: Path
) -> None:
    scan = scan_repository(repository)

    assert scan.status == Scan.Status.SUCCEEDED, scan.error
    assert scan.commit == git(source, "rev-parse", "HEAD")
    assert scan.branch == "main"
    assert scan.summary["ruff"]["new"] == 1
    finding = Finding.objects.get(repository=repository)
    assert (finding.rule, finding.file, finding.line) == ("F401", "app.py", 1)
    assert finding.status == Finding.Status.OPEN
    assert finding.severity == Finding.Severity.MEDIUM
    assert finding.task is not None
    assert (finding.task.kind, finding.task.source) == ("fix_code_finding", "healthmon")
    # The source repository is only read: no new files, nothing changed.
    assert git(source, "status", "--porcelain") == ""


def test_a_fixed_finding_gets_fixed_at_and_its_task_is_closed(
    repository: Repository, source: Path
) -> None:
    scan_repository(repository)
    commit(source, {"app.py": CLEAN}, "drop the unused import")

    scan = scan_repository(repository)

    assert scan.summary["ruff"] == {
        "reported": 0,
        "new": 0,
        "open": 0,
        "fixed": 1,
        "intended": 0,
        "ignored": 0,
    }
    finding = Finding.objects.get(repository=repository)
    assert finding.status == Finding.Status.FIXED
    assert finding.fixed_at is not None
    assert finding.task is not None
    finding.task.refresh_from_db()
    assert finding.task.status == Task.Status.CANCELLED
    assert Task.objects.filter(kind="fix_code_finding").count() == 1


def test_a_finding_keeps_its_identity_when_lines_move(repository: Repository, source: Path) -> None:
    commit(source, {"app.py": "def main():\n    unused = 1\n    return 2\n"})
    scan_repository(repository)
    before = Finding.objects.get(repository=repository, status=Finding.Status.OPEN)
    assert (before.rule, before.line) == ("F841", 2)

    moved = '"""A docstring."""\n\nLIMIT = 3\n\n\ndef main():\n    unused = 1\n    return 2\n'
    commit(source, {"app.py": moved}, "lines above")
    scan = scan_repository(repository)

    assert scan.summary["ruff"]["new"] == 0
    assert scan.summary["ruff"]["open"] == 1
    after = Finding.objects.get(repository=repository, rule="F841")
    assert (after.pk, after.status, after.line) == (before.pk, Finding.Status.OPEN, 7)


def test_an_ignored_finding_stays_ignored_and_opens_no_task(repository: Repository) -> None:
    scan_repository(repository)
    finding = Finding.objects.get(repository=repository)
    code_findings.mark_ignored(finding)

    scan = scan_repository(repository)

    finding.refresh_from_db()
    assert finding.status == Finding.Status.IGNORED
    assert (scan.summary["ruff"]["ignored"], scan.summary["ruff"]["new"]) == (1, 0)
    assert finding.task is not None
    assert finding.task.status == Task.Status.CANCELLED
    assert not Task.objects.filter(kind="fix_code_finding", status=Task.Status.PENDING).exists()


def test_an_intended_finding_stays_intended(repository: Repository) -> None:
    scan_repository(repository)
    finding = Finding.objects.get(repository=repository)
    code_findings.mark_intended(finding)

    scan = scan_repository(repository)

    finding.refresh_from_db()
    assert finding.status == Finding.Status.INTENDED
    assert scan.summary["ruff"]["intended"] == 1
    assert scan.summary["ruff"]["new"] == 0
    assert finding.task is not None
    assert finding.task.status == Task.Status.CANCELLED
    assert not Task.objects.filter(kind="fix_code_finding", status=Task.Status.PENDING).exists()


def test_a_path_that_is_not_a_repository_fails_the_scan_and_keeps_the_results(
    repository: Repository, tmp_path: Path
) -> None:
    scan_repository(repository)
    plain = tmp_path / "plain"
    plain.mkdir()
    repository.path = str(plain)
    repository.save()

    scan = scan_repository(repository)

    assert scan.status == Scan.Status.FAILED
    assert "not appear to be a git repository" in scan.error
    assert scan.finished_at is not None
    finding = Finding.objects.get(repository=repository)
    assert finding.status == Finding.Status.OPEN

    repository.path = str(tmp_path / "missing")
    repository.save()
    assert "is not a directory" in scan_repository(repository).error


def test_one_scan_of_a_repository_runs_at_a_time(repository: Repository) -> None:
    running = Scan.objects.create(
        repository=repository, status=Scan.Status.RUNNING, started_at=timezone.now()
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        Scan.objects.create(repository=repository, status=Scan.Status.RUNNING)

    refused = scan_repository(repository)
    assert refused.status == Scan.Status.FAILED
    assert f"running (#{running.pk})" in refused.error

    # Past the time limit the running scan counts as failed and the next one runs.
    Scan.objects.filter(pk=running.pk).update(started_at=timezone.now() - timedelta(hours=2))
    assert scan_repository(repository).status == Scan.Status.SUCCEEDED
    running.refresh_from_db()
    assert running.status == Scan.Status.FAILED
    assert "limit" in running.error


def test_the_repository_s_own_ruff_configuration_is_used(db: Any, tmp_path: Path) -> None:
    own = make_repository(
        tmp_path / "own", {"app.py": UNUSED_IMPORT, "ruff.toml": '[lint]\nignore = ["F401"]\n'}
    )
    repository = Repository.objects.create(name="own", path=str(own))

    scan = scan_repository(repository)

    assert scan.status == Scan.Status.SUCCEEDED, scan.error
    assert not Finding.objects.filter(repository=repository).exists()


def test_a_configuration_ruff_cannot_read_fails_the_scan_with_ruff_s_reason(
    db: Any, tmp_path: Path
) -> None:
    broken = make_repository(
        tmp_path / "broken", {"app.py": CLEAN, "ruff.toml": 'line-length = "long"\n'}
    )
    repository = Repository.objects.create(name="broken", path=str(broken))

    scan = scan_repository(repository)

    assert scan.status == Scan.Status.FAILED
    assert scan.error.startswith("ruff: ruff failed:")
    assert scan.summary["ruff"] == {"error": scan.error.removeprefix("ruff: ")}
    assert "Failed to parse" in scan.error
    assert 'invalid type: string "long"' in scan.error


def test_a_task_severity_that_is_not_one_is_a_configuration_error(settings: Any) -> None:
    settings.HEALTHMON_CODE_TASK_MIN_SEVERITY = "urgent"
    with pytest.raises(ImproperlyConfigured, match="is not a severity: use info, low"):
        code_findings.task_min_severity()
    settings.HEALTHMON_CODE_TASK_MIN_SEVERITY = " High"
    assert code_findings.task_min_severity() == Finding.Severity.HIGH
