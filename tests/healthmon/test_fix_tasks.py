"""A new error pattern becomes work for the engine: one task, opened in the background
as soon as the batch that first saw it commits (no periodic sweep in between)."""

from __future__ import annotations

from typing import Any

import pytest

from healthmon.fix_tasks import open_fix_tasks
from healthmon.ingest import LogRecord, ingest
from healthmon.levels import Level
from healthmon.models import Fingerprint, LogSource
from selfheal.models import Task
from tests.controlplane.test_background import wait_for


@pytest.fixture
def source(db: Any) -> LogSource:
    return LogSource.objects.create(name="shop", service="shop", kind=LogSource.Kind.OTLP)


def declined(count: int) -> list[LogRecord]:
    return [LogRecord(f"card {i} declined by issuer", level=Level.ERROR) for i in range(count)]


@pytest.mark.django_db(transaction=True)
def test_the_task_is_opened_in_the_background_once_the_batch_commits(
    source: LogSource, settings: Any
) -> None:
    settings.BACKGROUND_EAGER = False  # the embedded mode's in-process pool
    settings.CELERY_BROKER_URL = ""

    ingest(source, declined(3))

    wait_for(lambda: Fingerprint.objects.filter(task__isnull=False).exists())
    task = Task.objects.get()
    assert Fingerprint.objects.get().task == task
    assert task.status == Task.Status.PENDING


@pytest.mark.django_db
def test_opening_again_for_the_same_pattern_opens_nothing_new(
    source: LogSource, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        ingest(source, declined(2))
    fingerprint = Fingerprint.objects.get()

    # A second caller (a repeated background job, the repair playbook) finds the task.
    Fingerprint.objects.update(task=None)
    assert open_fix_tasks([fingerprint.pk])[0] == fingerprint.task
    assert Task.objects.count() == 1


@pytest.mark.django_db
def test_a_regression_opens_a_new_task_once_the_old_one_is_closed(
    source: LogSource, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        ingest(source, declined(2))
    first = Task.objects.get()
    Task.objects.filter(pk=first.pk).update(status=Task.Status.COMPLETED)
    Fingerprint.objects.update(status=Fingerprint.Status.RESOLVED)

    with django_capture_on_commit_callbacks(execute=True):
        ingest(source, declined(1))

    fingerprint = Fingerprint.objects.get()
    assert fingerprint.status == Fingerprint.Status.REGRESSED
    assert fingerprint.task is not None
    assert fingerprint.task != first
    assert Task.objects.count() == 2
