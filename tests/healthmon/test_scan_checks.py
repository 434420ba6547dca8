"""How a scan runs its checks: what each is told changed since its last success, the
state and cache it keeps, a failing check beside succeeding ones, and progress."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from healthmon import code_checkout, code_scans
from healthmon.code_checks import CheckFailed, Reported, ScanContext
from healthmon.code_checks import ruff as ruff_check
from healthmon.code_scans import scan_changed, scan_repository
from healthmon.models import Finding, Repository, Scan
from tests.healthmon.code_repos import CLEAN, UNUSED_IMPORT, commit, make_repository


@pytest.fixture(autouse=True)
def _code_settings(settings: Any, tmp_path: Path) -> None:
    settings.HEALTHMON_CODE_WORKDIR = tmp_path / "work"
    settings.HEALTHMON_CODE_TASK_MIN_SEVERITY = "critical"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    files = {"a.py": UNUSED_IMPORT, "b.py": UNUSED_IMPORT, "c.py": CLEAN}
    return make_repository(tmp_path / "app", files)


@pytest.fixture
def repository(db: Any, source: Path) -> Repository:
    return Repository.objects.create(name="app", path=str(source))


class Recorder:
    """A check that records the context each scan gave it and reports nothing."""

    NAME = "recorder"

    def __init__(self) -> None:
        self.contexts: list[ScanContext] = []

    def run(self, context: ScanContext) -> list[Reported]:
        self.contexts.append(context)
        context.state["seen"] = len(self.contexts)
        return []


def failing(reason: str) -> SimpleNamespace:
    def run(context: ScanContext) -> list[Reported]:
        raise CheckFailed(reason)

    return SimpleNamespace(NAME="broken", run=run)


def linted(monkeypatch: pytest.MonkeyPatch) -> list[list[str] | None]:
    """The files each ruff run was asked about (None: the whole checkout)."""
    calls: list[list[str] | None] = []
    real = ruff_check.lint

    def lint(checkout: Path, timeout: float, files: list[str] | None = None) -> list[Reported]:
        calls.append(files)
        return real(checkout, timeout, files)

    monkeypatch.setattr(ruff_check, "lint", lint)
    return calls


def open_findings(repository: Repository) -> set[tuple[str, str]]:
    return set(repository.findings.filter(status=Finding.Status.OPEN).values_list("rule", "file"))


def test_a_check_is_told_what_changed_since_its_last_success(
    repository: Repository, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    monkeypatch.setattr(code_scans, "CHECKS", (recorder,))

    scan_repository(repository)
    commit(source, {"b.py": CLEAN, "d.py": CLEAN}, "fix b, add d")
    (source / "c.py").unlink()
    commit(source, {}, "drop c")
    scan_repository(repository)
    scan_repository(repository)

    first, second, third = recorder.contexts
    assert first.changed is None  # no earlier scan: a full one
    assert set(first.files) == {"a.py", "b.py", "c.py"}
    assert second.changed == {"b.py", "c.py", "d.py"}
    assert second.previous_state == {"seen": 1}
    assert third.changed == frozenset()
    assert Scan.objects.first().state == {"checks": {"recorder": {"seen": 3}}}  # type: ignore[union-attr]


def test_ruff_checks_again_only_the_files_that_changed_and_agrees_with_a_full_scan(
    repository: Repository, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(code_scans, "CHECKS", (ruff_check,))
    calls = linted(monkeypatch)
    scan_repository(repository)
    commit(source, {"b.py": CLEAN, "c.py": UNUSED_IMPORT}, "fix b, break c")

    scan = scan_repository(repository)

    assert scan.status == Scan.Status.SUCCEEDED, scan.error
    assert calls == [None, ["b.py", "c.py"]] or calls == [None, ["c.py", "b.py"]]
    assert open_findings(repository) == {("F401", "a.py"), ("F401", "c.py")}
    assert scan.summary["ruff"]["fixed"] == 1
    # A full scan (the cache gone) finds the same.
    shutil.rmtree(code_checkout.cache_path(repository))
    full = scan_repository(repository)
    assert calls[-1] is None
    assert full.summary["ruff"] == {**full.summary["ruff"], "new": 0, "fixed": 0}
    assert open_findings(repository) == {("F401", "a.py"), ("F401", "c.py")}


def test_a_changed_ruff_configuration_checks_everything_again(
    repository: Repository, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(code_scans, "CHECKS", (ruff_check,))
    calls = linted(monkeypatch)
    scan_repository(repository)
    commit(source, {"ruff.toml": '[lint]\nignore = ["F401"]\n'}, "ignore unused imports")

    scan = scan_repository(repository)

    assert calls == [None, None]
    assert scan.summary["ruff"]["fixed"] == 2
    assert open_findings(repository) == set()


def test_a_failing_check_fails_the_scan_but_the_others_are_reconciled(
    repository: Repository, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(code_scans, "CHECKS", (ruff_check,))
    scan_repository(repository)
    commit(source, {"a.py": CLEAN}, "fix a")
    monkeypatch.setattr(code_scans, "CHECKS", (failing("the tool crashed on x.py"), ruff_check))

    scan = scan_repository(repository)

    assert scan.status == Scan.Status.FAILED
    assert scan.error == "broken: the tool crashed on x.py"
    assert scan.summary["broken"] == {"error": "the tool crashed on x.py"}
    assert scan.summary["ruff"]["fixed"] == 1
    assert open_findings(repository) == {("F401", "b.py")}
    # The broken check kept no state: its next run is a full one.
    assert "broken" not in scan.state["checks"]


def test_a_check_that_fails_keeps_its_findings_as_they_were(
    repository: Repository, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(code_scans, "CHECKS", (ruff_check,))
    scan_repository(repository)
    commit(source, {"a.py": CLEAN, "b.py": CLEAN}, "fix both")
    broken_ruff = SimpleNamespace(NAME="ruff", run=failing("ruff crashed").run)
    monkeypatch.setattr(code_scans, "CHECKS", (broken_ruff,))

    scan = scan_repository(repository)

    assert scan.status == Scan.Status.FAILED
    assert open_findings(repository) == {("F401", "a.py"), ("F401", "b.py")}


def test_progress_is_recorded_and_announced_while_a_check_runs(
    repository: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, dict[str, list[int]], int]] = []

    def listen(sender: Any, scan: Scan, **kwargs: Any) -> None:
        stored = Scan.objects.get(pk=scan.pk)
        seen.append((stored.status, stored.progress, stored.files_scanned))

    def run(context: ScanContext) -> list[Reported]:
        for done in range(1, 5):
            context.progress(done, 4)
        return []

    monkeypatch.setattr(code_scans, "PROGRESS_EVERY_SECONDS", 0)
    monkeypatch.setattr(code_scans, "CHECKS", (SimpleNamespace(NAME="counter", run=run),))
    scan_changed.connect(listen)
    try:
        scan = scan_repository(repository)
    finally:
        scan_changed.disconnect(listen)

    assert scan.status == Scan.Status.SUCCEEDED
    running = [(progress, scanned) for status, progress, scanned in seen if status == "running"]
    # The move to running first, then each report as it was made.
    assert running[0] == ({}, 0)
    assert running[1:5] == [({"counter": [n, 4]}, round(3 * n / 4)) for n in range(1, 5)]
    assert seen[-1][0] == "succeeded"
    assert (scan.files_scanned, scan.files_total) == (3, 3)
