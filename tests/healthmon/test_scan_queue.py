"""Queued scans (the Code health page's Scan now): one at a time per repository, even
when two people click at once, and a queued scan's task runs it once."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from django.db import connections, transaction

from healthmon.code_scans import ScanRefused, queue_scan, run_queued_scan
from healthmon.models import Repository, Scan
from healthmon.tasks import scan_code_repository
from tests.controlplane.test_background import HANG_GUARD_SECONDS, wait_for
from tests.controlplane.test_rotate_secrets import _a_query_waits_on_a_lock
from tests.healthmon.code_repos import UNUSED_IMPORT, make_repository


@pytest.fixture(autouse=True)
def _code_settings(settings: Any, tmp_path: Path) -> None:
    settings.HEALTHMON_CODE_WORKDIR = tmp_path / "work"
    settings.HEALTHMON_CODE_TASK_MIN_SEVERITY = "critical"


@pytest.mark.django_db
def test_a_queued_scan_runs_once_and_a_second_delivery_does_nothing(tmp_path: Path) -> None:
    source = make_repository(tmp_path / "app", {"app.py": UNUSED_IMPORT})
    repository = Repository.objects.create(name="app", path=str(source))
    scan = queue_scan(repository)

    assert scan_code_repository.run(scan.pk) == Scan.Status.SUCCEEDED
    assert scan_code_repository.run(scan.pk) == "not queued"
    assert run_queued_scan(10_000) is None

    scan.refresh_from_db()
    assert scan.status == Scan.Status.SUCCEEDED
    assert scan.score == 4
    assert Scan.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_scan_nows_at_once_queue_one_scan() -> None:
    repository = Repository.objects.create(name="app", path="/nowhere")
    queued, commit = threading.Event(), threading.Event()
    outcomes: list[object] = []

    def first_click() -> None:
        try:
            with transaction.atomic():  # held open: its scan is not committed yet
                outcomes.append(queue_scan(repository))
                queued.set()
                commit.wait(HANG_GUARD_SECONDS)
        finally:
            connections.close_all()

    def second_click() -> None:
        try:
            outcomes.append(queue_scan(repository))
        except ScanRefused as refused:
            outcomes.append(refused)
        finally:
            connections.close_all()

    first = threading.Thread(target=first_click)
    first.start()
    assert queued.wait(HANG_GUARD_SECONDS)
    second = threading.Thread(target=second_click)
    second.start()
    wait_for(_a_query_waits_on_a_lock)  # the second waits for the first's lock
    commit.set()
    first.join(HANG_GUARD_SECONDS)
    second.join(HANG_GUARD_SECONDS)

    scan, refusal = outcomes
    assert isinstance(scan, Scan)
    assert isinstance(refusal, ScanRefused)
    assert f"already queued (#{scan.pk})" in str(refusal)
    assert Scan.objects.filter(repository=repository).count() == 1
