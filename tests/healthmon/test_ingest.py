"""Ingest: what a batch of log records leaves in storage, whatever its source."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from controlplane.models import AuditEvent
from healthmon.ingest import LogRecord, ingest
from healthmon.levels import Level
from healthmon.models import Fingerprint, LogSource, MinuteCount, Sample, ServiceMinute
from selfheal.error_patterns import fix_task_dedupe_key
from selfheal.models import Task
from selfheal.playbooks.checks import check_error_patterns

pytestmark = pytest.mark.django_db


@pytest.fixture
def source() -> LogSource:
    return LogSource.objects.create(name="api-logs", service="api", kind=LogSource.Kind.OTLP)


def timeouts(count: int, level: int = Level.ERROR, **fields: Any) -> list[LogRecord]:
    return [
        LogRecord(f"Connection to db-{i}.internal timed out after {i + 1}s", level=level, **fields)
        for i in range(count)
    ]


def test_a_batch_of_one_pattern_is_one_fingerprint_with_its_count(source: LogSource) -> None:
    result = ingest(source, timeouts(40))

    fingerprint = Fingerprint.objects.get()
    assert (result.accepted, result.rejected) == (40, 0)
    assert result.new_fingerprints == [fingerprint.pk]
    assert fingerprint.count == 40
    assert fingerprint.template == "Connection to <*> timed out after <*>"
    assert (fingerprint.service, fingerprint.level) == ("api", Level.ERROR)
    assert sum(MinuteCount.objects.values_list("count", flat=True)) == 40


def test_the_next_batch_adds_to_the_same_fingerprint(source: LogSource) -> None:
    ingest(source, timeouts(10))
    result = ingest(source, timeouts(5))

    assert result.new_fingerprints == []
    assert Fingerprint.objects.get().count == 15
    assert sum(MinuteCount.objects.values_list("count", flat=True)) == 15


def test_counts_are_kept_per_minute_of_the_records_time(source: LogSource) -> None:
    now = timezone.now().replace(second=30, microsecond=0)
    records = [LogRecord("worker started", at=now - timedelta(minutes=m)) for m in (0, 0, 1, 3)]

    ingest(source, records)

    minutes = dict(MinuteCount.objects.values_list("minute", "count"))
    assert minutes == {
        now.replace(second=0): 2,
        now.replace(second=0) - timedelta(minutes=1): 1,
        now.replace(second=0) - timedelta(minutes=3): 1,
    }


def test_the_same_pattern_in_two_services_is_two_fingerprints(source: LogSource) -> None:
    ingest(source, timeouts(3) + timeouts(2, service="billing"))

    rows = {row.service: row for row in Fingerprint.objects.all()}
    assert {service: row.count for service, row in rows.items()} == {"api": 3, "billing": 2}
    assert rows["api"].key == rows["billing"].key
    assert rows["api"].ref != rows["billing"].ref


def test_info_lines_are_grouped_and_counted_but_open_no_task(source: LogSource) -> None:
    ingest(source, [LogRecord(f"GET /orders/{i} answered", level=Level.INFO) for i in range(5)])

    assert Fingerprint.objects.get().count == 5
    assert not Task.objects.exists()


def test_a_new_error_pattern_opens_one_task_the_diagnosis_sees(
    source: LogSource, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        ingest(source, timeouts(3))
    with django_capture_on_commit_callbacks(execute=True):
        ingest(source, timeouts(3))

    fingerprint = Fingerprint.objects.get()
    task = Task.objects.get()
    assert fingerprint.task == task
    assert task.dedupe_key == fix_task_dedupe_key(fingerprint.ref)
    assert task.source == Task.Source.HEALTHMON
    assert task.payload["error_pattern"]["fingerprint"] == fingerprint.ref
    finding = check_error_patterns(timezone.now())
    assert finding.evidence["sources"] >= 1
    assert finding.evidence["top"][0]["fingerprint"] == fingerprint.ref
    assert finding.evidence["top"][0]["count"] == 6
    assert finding.evidence["without_fix_task"] == 0


def test_a_task_waits_for_the_configured_count(
    source: LogSource, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.HEALTHMON_TASK_MIN_COUNT = 5
    with django_capture_on_commit_callbacks(execute=True):
        ingest(source, timeouts(4))
    assert not Task.objects.exists()

    with django_capture_on_commit_callbacks(execute=True):
        ingest(source, timeouts(1))

    assert Fingerprint.objects.get().task == Task.objects.get()


def test_a_record_without_a_message_is_rejected_and_the_rest_kept(source: LogSource) -> None:
    result = ingest(source, [LogRecord(""), LogRecord("   "), *timeouts(2)])

    assert (result.accepted, result.rejected) == (2, 2)
    assert result.rejections == ["a record with no message body"] * 2
    assert Fingerprint.objects.get().count == 2


def test_nul_and_unpaired_surrogates_are_replaced_not_refused(source: LogSource) -> None:
    records = [
        LogRecord("payment\x00failed for order 7", attributes={"note\x00": "a\x00b"}),
        LogRecord("payment failed \udc80 for order 8"),
    ]

    result = ingest(source, records)

    assert result.accepted == 2
    messages = set(Sample.objects.values_list("message", flat=True))
    assert "payment\ufffdfailed for order 7" in messages
    assert "payment failed ? for order 8" in messages
    stored = Sample.objects.get(message__startswith="payment\ufffd").attributes
    assert stored == {"note\ufffd": "a\ufffdb"}


@pytest.mark.parametrize("offset", [timedelta(days=400), timedelta(days=-4000)])
def test_a_time_far_off_is_counted_now_and_kept_with_the_sample(
    source: LogSource, offset: timedelta
) -> None:
    at = timezone.now() + offset

    ingest(source, [LogRecord("clock skew seen", at=at)])

    sample = Sample.objects.get()
    assert abs(sample.at - timezone.now()) < timedelta(minutes=5)
    assert sample.attributes["original_timestamp"] == at.isoformat()
    assert MinuteCount.objects.get().minute > timezone.now() - timedelta(minutes=5)


def test_samples_are_a_bounded_ring_of_the_latest_lines(source: LogSource, settings: Any) -> None:
    settings.HEALTHMON_SAMPLES_PER_FINGERPRINT = 5
    for batch in range(4):
        ingest(source, [LogRecord(f"job {batch}-{i} failed", level=Level.ERROR) for i in range(3)])

    samples = Sample.objects.all()
    assert samples.count() == 5
    assert {s.message for s in samples} >= {"job 3-0 failed", "job 3-1 failed", "job 3-2 failed"}


def test_a_resolved_fingerprint_seen_again_is_regressed_and_audited(source: LogSource) -> None:
    ingest(source, timeouts(1))
    Fingerprint.objects.update(status=Fingerprint.Status.RESOLVED)

    ingest(source, timeouts(1))

    fingerprint = Fingerprint.objects.get()
    assert fingerprint.status == Fingerprint.Status.REGRESSED
    assert fingerprint.regressed_at is not None
    event = AuditEvent.objects.get(action="fingerprint.regressed")
    assert (event.before, event.after) == ({"status": "resolved"}, {"status": "regressed"})


def test_an_ignore_until_more_occurrences_runs_out(source: LogSource) -> None:
    ingest(source, timeouts(2))
    Fingerprint.objects.update(status=Fingerprint.Status.IGNORED, ignored_until_count=5)

    ingest(source, timeouts(2))
    assert Fingerprint.objects.get().status == Fingerprint.Status.IGNORED
    ingest(source, timeouts(1))

    assert Fingerprint.objects.get().status == Fingerprint.Status.UNRESOLVED


def test_a_traceback_logged_line_by_line_is_one_error_by_what_raised_it(
    source: LogSource,
) -> None:
    def traceback(order: int) -> list[LogRecord]:
        lines = [
            "Traceback (most recent call last):",
            '  File "/app/shop/orders.py", line 42, in place_order',
            f"    charge(order_{order})",
            '  File "/app/shop/payments.py", line 17, in charge',
            "    raise PaymentDeclined(card)",
            f"shop.payments.PaymentDeclined: card {order} declined",
        ]
        return [LogRecord(line, level=Level.ERROR) for line in lines]

    ingest(source, traceback(1) + traceback(2))

    fingerprint = Fingerprint.objects.get()
    assert fingerprint.count == 2
    assert fingerprint.template.startswith("shop.payments.PaymentDeclined (Python traceback)")


def test_http_answers_are_counted_per_service_and_minute(source: LogSource) -> None:
    records = [LogRecord(f"GET /pay {status}", http_status=status) for status in (200, 502, 503)]

    ingest(source, [*records, LogRecord("cache warmed")])

    minute = ServiceMinute.objects.get()
    assert (minute.service, minute.records, minute.http_requests, minute.http_5xx) == (
        "api",
        4,
        3,
        2,
    )


def test_the_health_page_hears_which_fingerprints_changed(
    source: LogSource,
    published: list[tuple[str, dict[str, Any]]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        ingest(source, timeouts(2))

    fingerprint = Fingerprint.objects.get()
    assert (
        "health",
        {"type": "health.fingerprints", "ids": [fingerprint.pk], "new": [fingerprint.pk]},
    ) in published
