"""The Railway crawler against a fake Railway API on a real socket: cursor, overlap,
rate limits, outages and refused tokens."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.db.models import Sum
from django.test import override_settings
from django.utils import timezone

from controlplane.models import Integration
from healthmon.ingest import ingest
from healthmon.models import CrawlRecord, Fingerprint, LogSource, MinuteCount, ServiceMinute
from healthmon.railway import crawler
from healthmon.railway.client import RailwayClient, parse_timestamp, timestamp_text
from healthmon.railway.crawler import CrawlOutcome, crawl_source
from tests.healthmon.railway_server import Failure, RailwayServer

pytestmark = pytest.mark.django_db(transaction=False)


class FakeClock:
    """The crawler's clock: sleeping moves it on at once, and is recorded."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return self.moment

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.moment += timedelta(seconds=seconds)


@pytest.fixture
def railway() -> Iterator[RailwayServer]:
    with RailwayServer() as server:
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(timezone.now().replace(microsecond=0))


def make_source(railway: RailwayServer, **options: Any) -> LogSource:
    integration = Integration(
        kind=Integration.Kind.RAILWAY, name="railway", settings={"api_url": railway.url}
    )
    integration.set_secrets({"token": "railway-token"})
    integration.save()
    return LogSource.objects.create(
        name="api-railway",
        service="api",
        kind=LogSource.Kind.RAILWAY,
        integration=integration,
        settings={"environment_id": "env-1", "service_id": "svc-1", **options},
    )


def crawl(source: LogSource, clock: FakeClock, **kwargs: Any) -> CrawlOutcome:
    source.refresh_from_db()
    return crawl_source(source, clock=clock, **kwargs)


def stored_lines() -> tuple[int, int]:
    """Lines counted on fingerprints, and in their minutes."""
    total = Fingerprint.objects.aggregate(n=Sum("count"))["n"] or 0
    minutes = MinuteCount.objects.aggregate(n=Sum("count"))["n"] or 0
    return total, minutes


def add_lines(railway: RailwayServer, start: datetime, count: int, step: float = 1.0) -> None:
    for number in range(count):
        severity = "error" if number % 3 == 0 else "info"
        railway.add_line(
            f"request {number} finished for user {number * 7}"
            if severity == "info"
            else f"payment {number} failed: card declined",
            at=start + timedelta(seconds=number * step),
            severity=severity,
            attributes={"order": number},
        )


@override_settings(HEALTHMON_CRAWL_PAGE_LINES=4, HEALTHMON_CRAWL_OVERLAP_SECONDS=60)
@pytest.mark.parametrize("one_more", [False, True], ids=["limit", "limit-plus-one"])
def test_two_overlapping_crawls_insert_each_line_once(
    railway: RailwayServer, clock: FakeClock, one_more: bool
) -> None:
    railway.one_more = one_more
    source = make_source(railway)
    add_lines(railway, clock.now() - timedelta(minutes=10), 15)
    # Two lines at one instant, across a page boundary.
    twin = clock.now() - timedelta(minutes=5)
    railway.add_line("twin A", at=twin)
    railway.add_line("twin B", at=twin)

    first = crawl(source, clock)
    assert first.error == ""
    assert first.lines == 17
    assert stored_lines() == (17, 17)
    assert len(railway.log_queries()) > 1  # it paged backwards through the window

    clock.moment += timedelta(seconds=30)  # the second window overlaps the first
    add_lines(railway, clock.now() - timedelta(seconds=20), 6, step=2)
    second = crawl(source, clock)
    assert second.error == ""
    assert second.lines == 6
    assert second.duplicates > 0  # the overlap was read again, and skipped
    assert stored_lines() == (23, 23)
    assert sum(ServiceMinute.objects.values_list("records", flat=True)) == 23

    clock.moment += timedelta(minutes=5)
    assert crawl(source, clock).lines == 0
    assert stored_lines() == (23, 23)


def test_a_line_railway_indexes_late_is_taken_once(
    railway: RailwayServer, clock: FakeClock
) -> None:
    source = make_source(railway)
    railway.add_line("cache warmed", at=clock.now() - timedelta(seconds=5))
    assert crawl(source, clock).lines == 1
    # A line stamped before the cursor, but within the overlap, shows up afterwards.
    railway.add_line("worker 7 stopped", at=clock.now() - timedelta(seconds=10))
    clock.moment += timedelta(minutes=5)
    assert crawl(source, clock).lines == 1
    assert stored_lines() == (2, 2)


def test_a_429_with_a_reset_header_is_waited_out(railway: RailwayServer, clock: FakeClock) -> None:
    source = make_source(railway)
    add_lines(railway, clock.now() - timedelta(minutes=2), 5)
    reset = clock.now() + timedelta(seconds=7)
    railway.fail(Failure(429, headers={"X-RateLimit-Reset": str(int(reset.timestamp()))}))

    outcome = crawl(source, clock)

    assert outcome.error == ""
    assert clock.sleeps == [7.0]
    assert outcome.lines == 5
    assert stored_lines() == (5, 5)


def test_retry_after_as_an_http_date_is_waited_out(
    railway: RailwayServer, clock: FakeClock
) -> None:
    source = make_source(railway)
    railway.add_line("ready", at=clock.now() - timedelta(seconds=30))
    retry = format_datetime(clock.now() + timedelta(seconds=12), usegmt=True)
    railway.fail(Failure(429, headers={"Retry-After": retry}))
    assert crawl(source, clock).lines == 1
    assert clock.sleeps == [12.0]


def test_a_used_up_quota_is_waited_for_before_the_next_request(
    railway: RailwayServer, clock: FakeClock
) -> None:
    source = make_source(railway, streams=["deployment", "http"])
    railway.add_line("ready", at=clock.now() - timedelta(seconds=30))
    railway.rate_limit_headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "3"}
    assert crawl(source, clock).lines == 1
    assert clock.sleeps
    assert all(seconds == 3.0 for seconds in clock.sleeps)


def test_a_long_rate_limit_ends_the_crawl_until_it_resets(
    railway: RailwayServer, clock: FakeClock
) -> None:
    source = make_source(railway)
    railway.add_line("ready", at=clock.now() - timedelta(seconds=30))
    railway.fail(Failure(429, headers={"Retry-After": "600"}))

    outcome = crawl(source, clock)

    assert "rate limit" in outcome.error
    assert clock.sleeps == []
    source.refresh_from_db()
    assert source.backoff_until == clock.now() + timedelta(seconds=600)
    assert "rate limit" in source.last_error
    assert crawl(source, clock).skipped.startswith("backing off until")

    clock.moment += timedelta(seconds=601)
    assert crawl(source, clock).lines == 1
    source.refresh_from_db()
    assert source.last_error == ""
    assert source.backoff_until is None


def test_an_outage_backs_off_and_recovery_resumes_from_the_cursor_without_a_gap(
    railway: RailwayServer, clock: FakeClock
) -> None:
    source = make_source(railway)
    add_lines(railway, clock.now() - timedelta(minutes=3), 4)
    assert crawl(source, clock).lines == 4

    railway.outage = True
    add_lines(railway, clock.now() + timedelta(seconds=1), 3)
    clock.moment += timedelta(minutes=5)
    failed = crawl(source, clock)
    assert "HTTP 503" in failed.error
    assert clock.sleeps == [2.0, 4.0]  # retried with growing waits, then gave up
    source.refresh_from_db()
    assert "HTTP 503" in source.last_error
    assert source.backoff_until is not None
    assert source.backoff_until > clock.now()
    assert "HTTP 503" in Integration.objects.get().last_error
    assert crawl(source, clock).skipped  # backing off

    add_lines(railway, clock.now() + timedelta(seconds=1), 5)
    railway.outage = False
    clock.moment = source.backoff_until + timedelta(minutes=10)
    recovered = crawl(source, clock)

    assert recovered.error == ""
    assert recovered.lines == 8
    assert stored_lines() == (12, 12)
    source.refresh_from_db()
    assert (source.last_error, source.backoff_until) == ("", None)
    assert Integration.objects.get().last_error == ""


@pytest.mark.parametrize("auth_status", [200, 401])
def test_an_expired_token_shows_on_source_and_integration_and_clears(
    railway: RailwayServer, clock: FakeClock, auth_status: int
) -> None:
    source = make_source(railway)
    railway.add_line("before expiry", at=clock.now() - timedelta(seconds=30))
    assert crawl(source, clock).lines == 1

    railway.tokens = {"renewed-token"}
    railway.auth_status = auth_status
    railway.add_line("while expired", at=clock.now() + timedelta(seconds=10))
    clock.moment += timedelta(minutes=5)
    failed = crawl(source, clock)

    assert "refused the token" in failed.error
    assert "railway-token" not in failed.error
    source.refresh_from_db()
    integration = Integration.objects.get()
    assert "refused the token" in source.last_error
    assert "refused the token" in integration.last_error

    integration.set_secrets({"token": "renewed-token"})
    integration.save()
    railway.add_line("after renewal", at=clock.now() + timedelta(seconds=10))
    clock.moment += timedelta(minutes=1)
    recovered = crawl(source, clock, force=True)  # an operator runs it at once

    assert recovered.error == ""
    assert recovered.lines == 2  # nothing from the expired stretch is missing
    source.refresh_from_db()
    assert source.last_error == ""
    assert Integration.objects.get().last_error == ""


def test_a_project_token_is_sent_as_railways_project_header(
    railway: RailwayServer, clock: FakeClock
) -> None:
    source = make_source(railway)
    Integration.objects.filter().update(settings={"api_url": railway.url, "token_type": "project"})
    railway.add_line("ready", at=clock.now() - timedelta(seconds=30))
    assert crawl(source, clock).lines == 1
    headers = railway.requests[-1].headers
    assert headers["project-access-token"] == "railway-token"
    assert "authorization" not in headers


def test_crawl_records_are_written_and_pruned(railway: RailwayServer, clock: FakeClock) -> None:
    source = make_source(railway)
    add_lines(railway, clock.now() - timedelta(minutes=1), 3)
    with override_settings(HEALTHMON_CRAWL_RECORDS_KEPT=2):
        first = crawl(source, clock)
        railway.outage = True
        clock.moment += timedelta(minutes=5)
        crawl(source, clock)
        railway.outage = False
        clock.moment += timedelta(hours=2)
        crawl(source, clock)

    records = list(CrawlRecord.objects.filter(source=source).order_by("id"))
    assert len(records) == 2
    assert first.record is not None
    assert first.record.pk not in {r.pk for r in records}
    failed, fine = records
    assert "HTTP 503" in failed.error
    assert failed.lines == 0
    assert fine.error == ""
    assert fine.lines == 0
    assert fine.pages >= 2
    assert first.record.lines == 3
    assert first.record.new_fingerprints == first.new_fingerprints == 2
    assert first.record.finished_at >= first.record.started_at


def test_http_logs_count_requests_and_5xx(railway: RailwayServer, clock: FakeClock) -> None:
    source = make_source(railway, streams=["http"])
    moment = clock.now() - timedelta(seconds=50)
    for number, status in enumerate([200, 200, 502, 500, 404]):
        railway.add_request(f"/orders/{number}", status, at=moment + timedelta(seconds=number))

    assert crawl(source, clock).lines == 5

    # The five seconds may straddle a minute: count over the service's minutes.
    totals = ServiceMinute.objects.filter(service="api").aggregate(
        requests=Sum("http_requests"), errors=Sum("http_5xx")
    )
    assert (totals["requests"], totals["errors"]) == (5, 2)
    errors = Fingerprint.objects.filter(level=40)
    assert sorted(row.count for row in errors) == [1, 1]  # 500 and 502, apart from the rest
    assert sum(Fingerprint.objects.values_list("count", flat=True)) == 5


def test_the_environment_stream_and_a_filter_read_what_they_name(
    railway: RailwayServer, clock: FakeClock
) -> None:
    source = make_source(railway, streams=["environment"], filter="@level:error")
    moment = clock.now() - timedelta(seconds=30)
    railway.add_line("db timeout after 30s", at=moment, severity="error", deployment="dep-9")
    railway.add_line("all good", at=moment, severity="info")
    railway.add_line("elsewhere", at=moment, severity="error", environment="env-2")

    assert crawl(source, clock).lines == 1
    assert Fingerprint.objects.get().template.startswith("db timeout")
    assert railway.log_queries()[0].variables["filter"] == "@level:error"


def test_a_new_deployment_is_followed_and_the_old_one_finished(
    railway: RailwayServer, clock: FakeClock
) -> None:
    source = make_source(railway)
    railway.add_line("old starting", at=clock.now() - timedelta(seconds=40))
    assert crawl(source, clock).lines == 1
    railway.add_line("old draining", at=clock.now() + timedelta(seconds=5), deployment="dep-1")
    railway.add_line("new starting", at=clock.now() + timedelta(seconds=3), deployment="dep-2")
    railway.deployments[("svc-1", "env-1")] = "dep-2"
    clock.moment += timedelta(minutes=5)
    assert crawl(source, clock).lines == 2
    source.refresh_from_db()
    assert source.cursor["deployment"]["target"] == "dep-2"


def test_a_source_without_its_ids_says_what_is_missing(
    railway: RailwayServer, clock: FakeClock
) -> None:
    source = make_source(railway)
    LogSource.objects.filter(pk=source.pk).update(settings={"streams": ["deployment"]})
    outcome = crawl(source, clock)
    assert outcome.error == "The source's settings need service_id."
    source.refresh_from_db()
    assert source.last_error == outcome.error
    assert source.backoff_until is None


def test_only_one_crawl_of_a_source_runs_at_a_time(
    railway: RailwayServer, clock: FakeClock
) -> None:
    source = make_source(railway)
    railway.add_line("ready", at=clock.now() - timedelta(seconds=30))
    inner: list[CrawlOutcome] = []

    def client_during_a_crawl(integration: Integration) -> RailwayClient:
        inner.append(crawl_source(LogSource.objects.get(pk=source.pk), clock=clock))
        return RailwayClient(integration)

    outer = crawl(source, clock, client_factory=client_during_a_crawl)

    assert inner[0].skipped == "another crawl of this source is running"
    assert outer.lines == 1
    assert crawl(source, clock).skipped == ""  # the lock went with the crawl


def test_the_crawl_runs_on_the_periodic_schedule() -> None:
    from controlplane.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["crawl-logs"]
    assert entry["schedule"] == float(settings.HEALTHMON_CRAWL_SECONDS) == 300.0
    assert entry["task"] in app.tasks


@override_settings(HEALTHMON_CRAWL_PAGE_LINES=4)
def test_a_crawl_that_breaks_between_pages_keeps_what_it_stored_and_resumes_after_it(
    railway: RailwayServer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_source(railway)
    add_lines(railway, clock.now() - timedelta(minutes=3), 10)
    calls: list[int] = []

    def ingest_then_break(source: LogSource, records: list[Any]) -> Any:
        calls.append(len(records))
        if len(calls) == 2:
            raise RuntimeError("database went away")
        return ingest(source, records)

    monkeypatch.setattr(crawler, "ingest", ingest_then_break)
    broken = crawl(source, clock)
    assert broken.error == "The crawl broke: RuntimeError: database went away"
    stored, _ = stored_lines()
    assert stored == calls[0]

    monkeypatch.undo()
    clock.moment += timedelta(minutes=5)
    resumed = crawl(source, clock, force=True)
    assert resumed.lines == 10 - stored
    assert stored_lines() == (10, 10)


def test_a_rate_limit_that_keeps_coming_back_ends_the_crawl(
    railway: RailwayServer, clock: FakeClock
) -> None:
    source = make_source(railway)
    railway.fail(*[Failure(429, headers={"Retry-After": "2"})] * 10)

    outcome = crawl(source, clock)

    assert "rate limit" in outcome.error
    assert clock.sleeps == [2.0] * 5
    source.refresh_from_db()
    assert source.backoff_until == clock.now() + timedelta(seconds=2)


def test_a_crawl_from_a_row_loaded_before_another_crawl_takes_no_line_twice(
    railway: RailwayServer, clock: FakeClock
) -> None:
    source = make_source(railway)
    stale = LogSource.objects.get(pk=source.pk)
    add_lines(railway, clock.now() - timedelta(minutes=2), 5)
    assert crawl(source, clock).lines == 5

    assert crawl_source(stale, clock=clock).lines == 0
    assert stored_lines() == (5, 5)


@override_settings(HEALTHMON_CRAWL_PAGE_LINES=3)
def test_a_window_too_big_for_one_walk_is_crawled_in_parts(
    railway: RailwayServer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(crawler, "MAX_WALK_PAGES", 2)
    source = make_source(railway)
    add_lines(railway, clock.now() - timedelta(minutes=50), 25, step=100)
    end = timestamp_text(clock.now())

    outcome = crawl(source, clock)

    assert outcome.error == ""
    assert outcome.lines == 25
    assert stored_lines() == (25, 25)
    line_times = {timestamp_text(parse_timestamp(line["timestamp"])) for line in railway.lines}
    window_ends = {query.variables["endDate"] for query in railway.log_queries()}
    assert window_ends - line_times - {end}  # some walks ended at a halved window


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_crawls_of_one_source_started_at_once_take_each_line_once(
    railway: RailwayServer,
) -> None:
    source = make_source(railway)
    add_lines(railway, timezone.now() - timedelta(minutes=5), 30)
    barrier = threading.Barrier(4)
    outcomes: list[CrawlOutcome] = []
    errors: list[str] = []

    def crawl_at_once() -> None:
        try:
            row = LogSource.objects.select_related("integration").get(pk=source.pk)
            barrier.wait(timeout=10)
            outcomes.append(crawl_source(row))
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=crawl_at_once) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert sorted(outcome.error for outcome in outcomes) == [""] * 4
    assert sum(outcome.lines for outcome in outcomes) == 30
    assert stored_lines() == (30, 30)


def test_a_source_with_nothing_yet_takes_what_comes_after_a_long_backoff(
    railway: RailwayServer, clock: FakeClock
) -> None:
    source = make_source(railway, lookback_minutes=60)
    assert crawl(source, clock).lines == 0
    railway.add_line("first words", at=clock.now() + timedelta(minutes=10))
    clock.moment += timedelta(hours=3)  # more than the lookback later
    assert crawl(source, clock).lines == 1
