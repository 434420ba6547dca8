"""A code scan the process stops under (Ctrl-C or SIGTERM on `bin/run`) ends at its
next step as interrupted, not as crashed: nothing of it is kept, no fix is proposed,
and the next scan runs it whole. A check that crashes while the process runs on is
still a crash, logged with its traceback."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from controlplane import background
from healthmon import code_pull_requests, code_scans
from healthmon.code_checks import CheckFailed, Reported, ScanContext
from healthmon.code_checks import ruff as ruff_check
from healthmon.code_scans import INTERRUPTED, scan_repository
from healthmon.models import Finding, Repository, Scan
from tests.healthmon.code_repos import UNUSED_IMPORT, make_repository


@pytest.fixture(autouse=True)
def _code_settings(settings: Any, tmp_path: Path) -> None:
    settings.HEALTHMON_CODE_WORKDIR = tmp_path / "work"


@pytest.fixture(autouse=True)
def process(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """This process's stop, as `stop_in_process_work` sets it; unset again afterwards."""
    stopped = threading.Event()
    monkeypatch.setattr(background, "_stopping", stopped)
    monkeypatch.setattr(background, "_scheduler", None)
    monkeypatch.setattr(background, "_pool", None)
    return stopped


@pytest.fixture
def after_scans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The scans whose pull requests were refreshed and fixes proposed, by id."""
    seen: list[int] = []
    monkeypatch.setattr(code_pull_requests, "after_scan", lambda scan: seen.append(scan.pk))
    return seen


@pytest.fixture
def repository(db: Any, tmp_path: Path) -> Repository:
    source = make_repository(tmp_path / "app", {"app.py": UNUSED_IMPORT})
    return Repository.objects.create(name="app", path=str(source))


def checks(monkeypatch: pytest.MonkeyPatch, *runs: Callable[[ScanContext], list[Reported]]) -> None:
    """The scan runs ruff, then checks doing `runs`."""
    made: list[ModuleType | SimpleNamespace] = [ruff_check]
    made += [SimpleNamespace(NAME=f"check{i}", run=run) for i, run in enumerate(runs)]
    monkeypatch.setattr(code_scans, "CHECKS", tuple(made))


def test_stopping_the_in_process_work_says_the_process_is_stopping():
    assert not background.stopping()
    background.stop_in_process_work()
    assert background.stopping()


def test_a_scan_the_process_stops_under_ends_at_its_next_step_as_interrupted(
    repository: Repository, monkeypatch: pytest.MonkeyPatch, after_scans: list[int], caplog: Any
):
    steps: list[str] = []

    def stopped_midway(context: ScanContext) -> list[Reported]:
        background.stop_in_process_work()  # Ctrl-C on bin/run, while this check works
        steps.append("before")
        context.remaining()  # the check's next step
        steps.append("after")
        return []

    checks(monkeypatch, stopped_midway, lambda context: steps.append("next check") or [])

    with caplog.at_level(logging.INFO, logger="healthmon.code_scans"):
        scan = scan_repository(repository)

    assert (scan.status, scan.error) == (Scan.Status.FAILED, INTERRUPTED)
    assert steps == ["before"]
    stored = Scan.objects.get(pk=scan.pk)
    assert (stored.status, stored.error, stored.summary) == (Scan.Status.FAILED, INTERRUPTED, {})
    assert stored.finished_at is not None
    # What ruff found before the stop is not kept as the scan's results.
    assert not Finding.objects.filter(repository=repository).exists()
    assert after_scans == []
    assert "interrupted" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    "failure",
    [
        # What a thread pool says once the interpreter's exit has begun.
        RuntimeError("cannot schedule new futures after interpreter shutdown"),
        # A tool killed with the process group, in the scan's last check.
        CheckFailed("ruff exited with -2 (SIGINT)"),
    ],
    ids=["a pool that takes no more work", "a tool killed with the process"],
)
def test_what_fails_on_the_way_out_is_the_exit_s_doing_not_a_crash(
    repository: Repository,
    monkeypatch: pytest.MonkeyPatch,
    after_scans: list[int],
    caplog: Any,
    failure: Exception,
):
    def fails_as_the_process_stops(context: ScanContext) -> list[Reported]:
        background.stop_in_process_work()
        raise failure

    checks(monkeypatch, fails_as_the_process_stops)

    scan = scan_repository(repository)

    assert (scan.status, scan.error) == (Scan.Status.FAILED, INTERRUPTED)
    assert not Finding.objects.filter(repository=repository).exists()
    assert after_scans == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_check_that_crashes_while_the_process_runs_on_is_a_crash(
    repository: Repository, monkeypatch: pytest.MonkeyPatch, after_scans: list[int], caplog: Any
):
    def buggy(context: ScanContext) -> list[Reported]:
        raise RuntimeError("a bug in the check")

    checks(monkeypatch, buggy)

    scan = scan_repository(repository)

    assert scan.status == Scan.Status.FAILED
    assert scan.error == "The scan crashed: RuntimeError: a bug in the check"
    assert after_scans == [scan.pk]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        f"Code scan #{scan.pk} of {repository} crashed"
    ]


def test_the_next_start_scans_an_interrupted_repository_whole(
    repository: Repository,
    monkeypatch: pytest.MonkeyPatch,
    after_scans: list[int],
    process: threading.Event,
):
    def stopped_midway(context: ScanContext) -> list[Reported]:
        background.stop_in_process_work()
        context.remaining()
        return []

    checks(monkeypatch, stopped_midway)
    interrupted = scan_repository(repository)
    assert interrupted.error == INTERRUPTED

    process.clear()  # a new process: bin/run started again
    checks(monkeypatch)
    scan = scan_repository(repository)

    assert scan.status == Scan.Status.SUCCEEDED, scan.error
    assert scan.summary["ruff"]["new"] == 1
    assert Finding.objects.filter(repository=repository, rule="F401").count() == 1
