"""The storage sweep: minutes rolled up to hours exactly once, and each kind of row
dropped after its retention setting."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import connections
from django.utils import timezone

from controlplane.background import EmbeddedScheduler
from healthmon import tasks
from healthmon.ingest import LogRecord, ingest
from healthmon.levels import Level
from healthmon.models import (
    Alert,
    AlertKind,
    AlertRule,
    Fingerprint,
    HourCount,
    LogSource,
    MinuteCount,
    Sample,
    ServiceMinute,
)
from healthmon.retention import sweep
from selfheal.models import Task, TaskStatus
from tests.selfheal import make_task

NOW = timezone.now().replace(minute=30, second=0, microsecond=0)
TWO_DAYS_AGO = NOW.replace(minute=0) - timedelta(days=2)


def make_fingerprint(key: str, last_seen: datetime = NOW, **fields: object) -> Fingerprint:
    return Fingerprint.objects.create(
        service="api",
        key=key,
        template=f"failure {key}",
        level=Level.ERROR,
        count=1,
        first_seen=last_seen - timedelta(days=1),
        last_seen=last_seen,
        **fields,
    )


def hourly(fingerprint: Fingerprint) -> dict[datetime, int]:
    return dict(fingerprint.hours.order_by("hour").values_list("hour", "count"))


def old_and_recent_minutes() -> tuple[Fingerprint, Fingerprint]:
    first, second = make_fingerprint("a"), make_fingerprint("b")
    MinuteCount.objects.bulk_create(
        [
            # Two hours two days ago: 60 minutes of 2, then 30 minutes of 1.
            *(
                MinuteCount(fingerprint=first, minute=TWO_DAYS_AGO + timedelta(minutes=m), count=2)
                for m in range(60)
            ),
            *(
                MinuteCount(
                    fingerprint=first, minute=TWO_DAYS_AGO + timedelta(minutes=60 + m), count=1
                )
                for m in range(30)
            ),
            MinuteCount(fingerprint=second, minute=TWO_DAYS_AGO + timedelta(minutes=5), count=7),
            # Within the day: kept as minutes.
            MinuteCount(fingerprint=first, minute=NOW - timedelta(minutes=3), count=4),
        ]
    )
    return first, second


@pytest.mark.django_db
def test_rolling_up_twice_counts_each_minute_once() -> None:
    first, second = old_and_recent_minutes()

    assert sweep(NOW).minutes_rolled_up == 91
    assert sweep(NOW).minutes_rolled_up == 0

    assert hourly(first) == {TWO_DAYS_AGO: 120, TWO_DAYS_AGO + timedelta(hours=1): 30}
    assert hourly(second) == {TWO_DAYS_AGO: 7}
    assert list(MinuteCount.objects.values_list("count", flat=True)) == [4]


@pytest.mark.django_db
def test_a_late_minute_is_added_to_the_hour_already_rolled_up() -> None:
    fingerprint = make_fingerprint("a")
    MinuteCount.objects.create(fingerprint=fingerprint, minute=TWO_DAYS_AGO, count=5)
    sweep(NOW)

    MinuteCount.objects.create(
        fingerprint=fingerprint, minute=TWO_DAYS_AGO + timedelta(minutes=59), count=3
    )
    sweep(NOW)

    assert hourly(fingerprint) == {TWO_DAYS_AGO: 8}


@pytest.mark.django_db(transaction=True)
def test_two_sweeps_at_once_count_each_minute_once() -> None:
    first, second = old_and_recent_minutes()
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait()
            sweep(NOW)
        except BaseException as exc:  # reported to the test, which asserts there is none
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert hourly(first) == {TWO_DAYS_AGO: 120, TWO_DAYS_AGO + timedelta(hours=1): 30}
    assert hourly(second) == {TWO_DAYS_AGO: 7}


@pytest.mark.django_db
def test_old_hours_and_service_minutes_are_dropped(settings: object) -> None:
    fingerprint = make_fingerprint("a")
    HourCount.objects.create(fingerprint=fingerprint, hour=NOW - timedelta(days=31), count=9)
    HourCount.objects.create(fingerprint=fingerprint, hour=NOW - timedelta(days=29), count=4)
    ServiceMinute.objects.create(service="api", minute=TWO_DAYS_AGO, records=5)
    ServiceMinute.objects.create(service="api", minute=NOW - timedelta(minutes=1), records=6)

    result = sweep(NOW)

    assert (result.hours_deleted, result.service_minutes_deleted) == (1, 1)
    assert list(HourCount.objects.values_list("count", flat=True)) == [4]
    assert list(ServiceMinute.objects.values_list("records", flat=True)) == [6]


@pytest.mark.django_db
def test_a_fingerprint_long_unseen_goes_with_its_rows_unless_its_task_is_open() -> None:
    long_ago = NOW - timedelta(days=91)
    gone = make_fingerprint("gone", last_seen=long_ago)
    MinuteCount.objects.create(fingerprint=gone, minute=long_ago, count=1)
    Sample.objects.create(fingerprint=gone, slot=0, at=long_ago, message="failure gone")
    make_fingerprint("worked-on", last_seen=long_ago, task=make_task("Fix it"))
    done_task = make_task("Fixed")
    Task.objects.filter(pk=done_task.pk).update(status=TaskStatus.COMPLETED)
    make_fingerprint("done", last_seen=long_ago, task=done_task)
    make_fingerprint("recent", last_seen=NOW - timedelta(days=89))

    assert sweep(NOW).fingerprints_deleted == 2

    assert set(Fingerprint.objects.values_list("key", flat=True)) == {"worked-on", "recent"}
    assert not Sample.objects.filter(fingerprint_id=gone.pk).exists()
    assert not MinuteCount.objects.filter(fingerprint_id=gone.pk).exists()


@pytest.mark.django_db
def test_alerts_cleared_long_ago_are_dropped_and_open_ones_kept() -> None:
    rule = AlertRule.objects.create(name="5xx", kind=AlertKind.SUSTAINED_5XX)
    long_ago = NOW - timedelta(days=100)

    def alert(service: str, cleared_at: datetime | None) -> Alert:
        return Alert.objects.create(
            rule=rule,
            kind=rule.kind,
            service=service,
            since=long_ago,
            opened_at=long_ago,
            cleared_at=cleared_at,
            summary=service,
        )

    alert("old", NOW - timedelta(days=91))
    alert("recent", NOW - timedelta(days=89))
    alert("still-open", None)

    assert sweep(NOW).alerts_deleted == 1

    assert set(Alert.objects.values_list("service", flat=True)) == {"recent", "still-open"}


@pytest.mark.django_db  # the scheduler imports every app's tasks, as a worker does
def test_the_sweep_and_the_alert_evaluation_are_on_the_periodic_schedule(settings: Any) -> None:
    scheduler = EmbeddedScheduler(settings.CELERY_BEAT_SCHEDULE)

    evaluate, every_minute, _ = scheduler.entries["evaluate-health-alerts"]
    sweep_task, every_ten_minutes, _ = scheduler.entries["sweep-health-storage"]

    assert (evaluate, every_minute.run_every) == (
        "healthmon.tasks.evaluate_alerts",
        timedelta(minutes=1),
    )
    assert (sweep_task, every_ten_minutes.run_every) == (
        "healthmon.tasks.sweep_storage",
        timedelta(minutes=10),
    )
    old_and_recent_minutes()
    assert tasks.sweep_storage()["minutes_rolled_up"] == 91
    assert tasks.evaluate_alerts() == 0  # two fingerprints a day old: nothing new


@pytest.mark.django_db
def test_a_pattern_seen_again_after_its_fingerprint_was_dropped_is_stored_anew() -> None:
    source = LogSource.objects.create(name="api", service="api", kind=LogSource.Kind.FILE)
    ingest(source, [LogRecord("cache miss storm on shard 4", level=Level.ERROR)])
    dropped = Fingerprint.objects.get()
    Fingerprint.objects.filter(pk=dropped.pk).update(last_seen=NOW - timedelta(days=91))
    sweep(NOW)

    result = ingest(source, [LogRecord("cache miss storm on shard 4", level=Level.ERROR)])

    again = Fingerprint.objects.get()
    assert again.pk != dropped.pk
    assert (again.key, again.count) == (dropped.key, 1)
    assert result.new_fingerprints == [again.pk]
