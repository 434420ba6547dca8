"""Alerts on rates: a spike over its baseline and a sustained share of HTTP 5xx, each
told once per episode and cleared once; and storms told in one summary."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from healthmon.alerts.evaluation import evaluate_alerts
from healthmon.ingest import LogRecord, ingest
from healthmon.levels import Level
from healthmon.models import Alert, AlertKind, Fingerprint, LogSource, MinuteCount
from tests.healthmon.alerting import (
    make_channel,
    make_source,
    messages,
    minutes,
    only_rule,
    subjects,
    this_minute,
)

pytestmark = pytest.mark.django_db


def occurrences(source: LogSource, message: str, per_minute: dict[datetime, int]) -> None:
    ingest(
        source,
        [
            LogRecord(message, at=minute, level=Level.ERROR)
            for minute, count in per_minute.items()
            for _ in range(count)
        ],
    )


# --- spike ----------------------------------------------------------------------------


def test_a_spike_is_told_once_and_cleared_once_when_the_rate_is_back_under() -> None:
    make_channel()
    only_rule(
        AlertKind.SPIKE, multiplier=Decimal("3"), floor=20, window_minutes=5, baseline_minutes=60
    )
    source = make_source()
    start = this_minute() - minutes(180)
    message = "connection reset by peer while reading from upstream"
    # A steady 1 a minute for an hour, then 10 a minute for 5 minutes.
    occurrences(source, message, {start + minutes(m): 1 for m in range(60)})
    occurrences(source, message, {start + minutes(60 + m): 10 for m in range(5)})

    evaluate_alerts(now=start + minutes(60))  # the window still before the spike
    assert messages() == []
    evaluate_alerts(now=start + minutes(65))
    evaluate_alerts(now=start + minutes(66))

    [opened] = subjects()
    assert opened.startswith("[api] Spike error: connection reset by peer")
    alert = Alert.objects.get()
    assert alert.details["occurrences"] == 50
    assert alert.details["baseline_occurrences"] == 60

    evaluate_alerts(now=start + minutes(75))  # the last 5 minutes had nothing
    evaluate_alerts(now=start + minutes(76))

    assert len(messages()) == 2
    assert messages()[1].subject.startswith("[api] Cleared: Spike error")
    alert.refresh_from_db()
    assert alert.cleared_at == start + minutes(75)


def test_a_rise_under_the_floor_or_under_the_multiple_is_not_a_spike() -> None:
    make_channel()
    only_rule(
        AlertKind.SPIKE, multiplier=Decimal("3"), floor=20, window_minutes=5, baseline_minutes=60
    )
    source = make_source()
    start = this_minute() - minutes(180)
    # Under the floor: nothing, then 3 a minute (15 in the window, 15x the baseline).
    occurrences(source, "slow query on orders", {start + minutes(m): 1 for m in range(0, 60, 6)})
    occurrences(source, "slow query on orders", {start + minutes(60 + m): 3 for m in range(5)})
    # Under the multiple: 5 a minute steady, then 14 a minute (2.8x).
    busy = make_source("busy")
    occurrences(busy, "retrying job", {start + minutes(m): 5 for m in range(60)})
    occurrences(busy, "retrying job", {start + minutes(60 + m): 14 for m in range(5)})

    evaluate_alerts(now=start + minutes(65))

    assert messages() == []


def test_a_fingerprint_younger_than_the_baseline_is_the_new_fingerprint_rules() -> None:
    make_channel()
    only_rule(AlertKind.SPIKE, floor=5, window_minutes=5, baseline_minutes=60)
    start = this_minute() - minutes(180)
    occurrences(make_source(), "brand new failure", {start + minutes(m): 10 for m in range(5)})

    evaluate_alerts(now=start + minutes(5))

    assert messages() == []


# --- sustained 5xx --------------------------------------------------------------------


def http(source: LogSource, at: datetime, ok: int, failed: int) -> None:
    ingest(
        source,
        [LogRecord("GET /checkout 200", at=at, http_status=200) for _ in range(ok)]
        + [LogRecord("GET /checkout 502", at=at, http_status=502) for _ in range(failed)],
    )


def test_sustained_5xx_is_told_once_and_cleared_once_the_share_is_under_the_threshold() -> None:
    make_channel()
    only_rule(AlertKind.SUSTAINED_5XX, threshold=Decimal("0.10"), minutes=3, min_requests=20)
    source = make_source("checkout")
    start = this_minute() - minutes(60)
    for minute in range(3):
        http(source, start + minutes(minute), ok=8, failed=2)  # 20% for 3 minutes

    evaluate_alerts(now=start + minutes(2))  # only 2 minutes of it so far
    assert messages() == []
    evaluate_alerts(now=start + minutes(3))
    http(source, start + minutes(3), ok=9, failed=1)  # 10%: still at the threshold
    evaluate_alerts(now=start + minutes(4))

    [opened] = subjects()
    assert opened == "[checkout] 20% of HTTP requests answered 5xx for 3 min"
    assert "/health/?service=checkout" in messages()[0].body

    for minute in range(4, 7):
        http(source, start + minutes(minute), ok=20, failed=0)
    evaluate_alerts(now=start + minutes(6))  # 1+0+0 of 60: under 10% over 3 minutes
    evaluate_alerts(now=start + minutes(7))

    assert len(messages()) == 2
    assert messages()[1].subject.startswith("[checkout] Cleared: 20% of HTTP requests")
    assert Alert.objects.get().cleared_at == start + minutes(6)


def test_one_bad_minute_a_minute_without_requests_or_too_few_requests_is_not_sustained() -> None:
    make_channel()
    only_rule(AlertKind.SUSTAINED_5XX, threshold=Decimal("0.05"), minutes=3, min_requests=20)
    start = this_minute() - minutes(60)
    burst = make_source("burst")
    http(burst, start, ok=10, failed=10)
    http(burst, start + minutes(1), ok=10, failed=0)
    http(burst, start + minutes(2), ok=10, failed=0)
    quiet = make_source("quiet")
    for minute in range(3):
        http(quiet, start + minutes(minute), ok=1, failed=5)
    gap = make_source("gap")
    http(gap, start, ok=0, failed=20)
    http(gap, start + minutes(2), ok=0, failed=20)

    evaluate_alerts(now=start + minutes(3))

    assert messages() == []


# --- storms ---------------------------------------------------------------------------


def test_a_thousand_new_fingerprints_in_a_minute_make_one_summary(settings: object) -> None:
    make_channel()
    only_rule(AlertKind.NEW_FINGERPRINT)
    now = this_minute()
    seen = now - minutes(1)
    Fingerprint.objects.bulk_create(
        Fingerprint(
            service="api",
            key=f"k{n:04d}",
            template=f"failure number {n}",
            level=Level.ERROR,
            count=1 + n % 7,
            first_seen=seen,
            last_seen=seen,
        )
        for n in range(1000)
    )

    evaluate_alerts(now=now)
    evaluate_alerts(now=now + minutes(1))

    [summary] = messages()
    assert summary.subject == "1000 alerts: new error fingerprint (api)"
    assert "and 995 more." in summary.body
    assert "/health/?service=api" in summary.body
    assert summary.body.count("/health/fingerprints/") == 5
    assert Alert.objects.open().count() == 1000
    assert list(Alert.objects.first().deliveries()) == [summary]  # type: ignore[union-attr]

    evaluate_alerts(now=now + minutes(62))  # all quiet for the window

    assert [m.subject for m in messages()[1:]] == [
        "1000 alerts cleared: new error fingerprint (api)"
    ]
    assert not Alert.objects.open().exists()


def test_as_many_as_the_storm_size_are_told_one_by_one(settings: object) -> None:
    make_channel()
    only_rule(AlertKind.NEW_FINGERPRINT)
    now = timezone.now().replace(second=0, microsecond=0)
    Fingerprint.objects.bulk_create(
        Fingerprint(
            service="api",
            key=f"k{n}",
            template=f"failure {n}",
            level=Level.ERROR,
            count=1,
            first_seen=now - minutes(1),
            last_seen=now - minutes(1),
        )
        for n in range(10)
    )

    evaluate_alerts(now=now)

    assert len(messages()) == 10
    assert len({m.dedupe_key for m in messages()}) == 10


def test_many_spikes_at_once_make_one_summary() -> None:
    make_channel()
    only_rule(AlertKind.SPIKE, floor=5, window_minutes=5, baseline_minutes=60)
    start = this_minute() - minutes(180)
    fingerprints = Fingerprint.objects.bulk_create(
        Fingerprint(
            service=f"svc{n % 3}",
            key=f"s{n}",
            template=f"spiking {n}",
            level=Level.ERROR,
            count=100,
            first_seen=start,
            last_seen=start + minutes(64),
        )
        for n in range(30)
    )
    MinuteCount.objects.bulk_create(
        MinuteCount(fingerprint=fingerprint, minute=start + minutes(60 + m), count=10)
        for fingerprint in fingerprints
        for m in range(5)
    )

    evaluate_alerts(now=start + minutes(65))

    assert subjects() == ["30 alerts: spike (rate over a multiple of its baseline) (3 services)"]


def test_a_storm_costs_the_same_queries_whatever_its_size() -> None:
    make_channel()
    only_rule(AlertKind.NEW_FINGERPRINT)
    now = this_minute()

    def storm(size: int, prefix: str) -> int:
        Fingerprint.objects.bulk_create(
            Fingerprint(
                service="api",
                key=f"{prefix}{n}",
                template=f"failure {prefix}{n}",
                level=Level.ERROR,
                count=1,
                first_seen=now - minutes(1),
                last_seen=now - minutes(1),
            )
            for n in range(size)
        )
        with CaptureQueriesContext(connection) as queries:
            evaluate_alerts(now=now)
        return len(queries)

    storm(11, "warm")  # the first run fills what is cached (the notifications toggle)
    assert storm(11, "a") == storm(300, "b")
    assert len(messages()) == 3
