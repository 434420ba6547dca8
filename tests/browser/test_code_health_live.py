"""The Code health page in headless Chromium during a running scan: the progress
(files scanned of the total, and the check's own) shows and moves without a reload,
and when the scan ends its result (succeeded, its finding) appears without a reload.

The scan runs in this test process, in a thread, with one check of the test's own
that reports progress and then waits for the test to let it go on. Its events reach
the page's socket through Redis when the suite runs with one; on the embedded default
(an in-memory layer in each process) they cannot, and the socket's own look at the
database finds the changes instead: either way the page updates by itself.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.db import connections

from healthmon import code_scans
from healthmon.code_checks import Reported, ScanContext
from healthmon.models import Finding, Repository, Scan
from tests.browser.conftest import HANG_GUARD_MS
from tests.browser.test_selfheal_live import log_in, open_live
from tests.healthmon.code_repos import CLEAN, make_repository

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

FILES = 8
HANG_GUARD_SECONDS = HANG_GUARD_MS / 1000


class SteppedCheck:
    """A check that reports 2 of 8, waits for `advance`, reports 6 of 8, waits for
    `release`, and reports one finding: the test decides when the scan moves on."""

    NAME = "stepped"

    def __init__(self) -> None:
        self.advance = threading.Event()
        self.release = threading.Event()

    def run(self, context: ScanContext) -> list[Reported]:
        context.progress(2, FILES)
        if not self.advance.wait(HANG_GUARD_SECONDS):
            raise AssertionError("the test never let the check advance")
        context.progress(6, FILES)
        if not self.release.wait(HANG_GUARD_SECONDS):
            raise AssertionError("the test never released the check")
        return [
            Reported(
                check=self.NAME,
                rule="S100",
                severity=Finding.Severity.HIGH,
                message="A <stepped> finding",
                file="module_3.py",
                line=1,
                identity="stepped-s100",
            )
        ]


def text_of(page: Any, selector: str, expected: str) -> None:
    """Wait until the element's text contains `expected`."""
    page.wait_for_function(
        "([selector, expected]) => "
        "(document.querySelector(selector)?.textContent || '').includes(expected)",
        arg=[selector, expected],
    )


def test_a_running_scan_shows_its_progress_and_its_result_without_reloading(
    live_server_url: str,
    browser: Any,
    observer: Any,
    tmp_path: Path,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings.HEALTHMON_CODE_WORKDIR = tmp_path / "work"
    settings.HEALTHMON_CODE_TASK_MIN_SEVERITY = "critical"
    source = make_repository(tmp_path / "app", {f"module_{n}.py": CLEAN for n in range(FILES)})
    repository = Repository.objects.create(name="app", path=str(source))
    check = SteppedCheck()
    monkeypatch.setattr(code_scans, "CHECKS", (SimpleNamespace(NAME=check.NAME, run=check.run),))
    # Every progress report is written, so the test knows what the page must show.
    monkeypatch.setattr(code_scans, "PROGRESS_EVERY_SECONDS", 0.0)
    scanned: list[Scan] = []

    def scan() -> None:
        try:
            scanned.append(code_scans.scan_repository(repository))
        finally:
            connections.close_all()

    context = browser.new_context()
    worker = threading.Thread(target=scan, name="test-scan")
    try:
        page = context.new_page()
        log_in(page, live_server_url, observer.username)
        navigations = open_live(page, f"{live_server_url}/health/code/")
        row = f"#repo-{repository.pk}"
        assert "never scanned" in page.inner_text(row)

        worker.start()
        text_of(page, f"{row}-progress .files-scanned", "2 of 8 files")
        text_of(page, f"{row}-check-stepped", "2 / 8")
        assert page.inner_text(f"{row}-status") == "running"

        check.advance.set()
        text_of(page, f"{row}-progress .files-scanned", "6 of 8 files")
        text_of(page, f"{row}-check-stepped", "6 / 8")

        check.release.set()
        text_of(page, f"{row}-status", "succeeded")
        worker.join(HANG_GUARD_SECONDS)
        (finished,) = scanned
        assert finished.status == Scan.Status.SUCCEEDED, finished.error
        finding = Finding.objects.get(repository=repository)
        page.wait_for_selector(f"#code-findings #finding-{finding.pk}")
        assert "A <stepped> finding" in page.inner_text(f"#finding-{finding.pk}")
        assert page.locator(f"#code-new #new-{finding.pk}").count() == 1
        assert page.inner_text(f"{row}-score") == "8"
        assert page.locator(f"{row}-progress").count() == 0
        assert navigations == [], "the Code health page reloaded instead of updating live"
    finally:
        check.advance.set()
        check.release.set()
        if worker.is_alive():
            worker.join(HANG_GUARD_SECONDS)
        context.close()
