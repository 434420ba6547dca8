"""The Railway crawler: each Railway source read forward from its cursor.

A source's settings name what to read: `environment_id` and `service_id` (its
latest deployment is looked up each crawl, or pinned with `deployment_id`), the
`streams` (`deployment`, `environment`, `http`; default `["deployment"]`) and an
optional `filter` in Railway's syntax (`@level:error`; by default every line, so
counts and spikes of info lines are visible too; `http_filter` for the HTTP stream).

**The cursor** (`LogSource.cursor`, one entry per stream) holds the newest timestamp
taken (`at`), the deployment it was read from (`target`), and the identities of the
lines taken in the last overlap window (`seen`). A crawl asks for the window from
`at - HEALTHMON_CRAWL_OVERLAP_SECONDS` to now, so lines Railway indexes late are still
read, and drops the lines it has already seen: consecutive crawls neither skip nor
double a line.

Railway answers a window with its *last* `limit` lines. A full answer means older
lines were left out, so the crawl walks backwards (the next query ends at the
earliest line of the last answer) until an answer is not full, then ingests the
pages oldest first. Each page is ingested and the cursor moved in one transaction:
a crawl that dies between pages resumes after the last page it stored. A window too
big for one walk is halved and crawled in parts.

**Faults**: a rate limit that resets soon (`Retry-After`, `X-RateLimit-Reset`, or
`X-RateLimit-Remaining: 0`) is waited out on the crawl's clock; a later one ends the
crawl and sets `backoff_until`. A 5xx or a network error is retried twice, then ends
the crawl with an exponential backoff. A refused token, like an outage, shows on the
source (`last_error`) and on its integration, and the next crawl that succeeds clears
both and resumes from the cursor.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from controlplane.models import Integration
from healthmon.ingest import ingest
from healthmon.models import CrawlRecord, LogSource
from healthmon.railway.client import (
    RailwayClient,
    RailwayError,
    RailwayRateLimited,
    RailwayUnavailable,
    RateLimit,
    parse_timestamp,
    timestamp_text,
)
from healthmon.railway.records import line_identity, line_record

log = logging.getLogger(__name__)

STREAMS = ("deployment", "environment", "http")
# Retries of a 5xx or a network error within one crawl, before it backs off.
RETRIES = 2
# Longest a crawl holds its source's lock: past the task's time limit.
LOCK_SECONDS = 900
BACKOFF_BASE_SECONDS = 60
# Pages one backward walk holds in memory; a window with more lines is halved.
MAX_WALK_PAGES = 50
# Rate limit waits within one crawl before it gives up and backs off.
MAX_WAITS = 5


class Clock(Protocol):
    def now(self) -> datetime: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return timezone.now()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


ClientFactory = Callable[[Integration], RailwayClient]


@dataclass
class CrawlOutcome:
    source: LogSource
    lines: int = 0
    duplicates: int = 0
    rejected: int = 0
    new_fingerprints: int = 0
    pages: int = 0
    error: str = ""
    skipped: str = ""  # why the crawl did not run (backing off, already running)
    duration: timedelta = timedelta()
    record: CrawlRecord | None = None


class SourceMisconfigured(Exception):
    pass


class _Backoff(Exception):
    def __init__(self, message: str, until: datetime) -> None:
        super().__init__(message)
        self.until = until


def crawl_all(
    *, clock: Clock | None = None, client_factory: ClientFactory = RailwayClient
) -> list[CrawlOutcome]:
    sources = LogSource.objects.filter(kind=LogSource.Kind.RAILWAY, enabled=True).select_related(
        "integration"
    )
    return [crawl_source(source, clock=clock, client_factory=client_factory) for source in sources]


def crawl_source(
    source: LogSource,
    *,
    clock: Clock | None = None,
    client_factory: ClientFactory = RailwayClient,
    force: bool = False,
) -> CrawlOutcome:
    """Crawl one source, unless it is backing off (`force` ignores that) or another
    crawl of it is running."""
    clock = clock or SystemClock()
    outcome = CrawlOutcome(source)
    if source.kind != LogSource.Kind.RAILWAY:
        outcome.skipped = f"{source.name} is not a Railway source"
        return outcome
    lock_key, token = f"healthmon:crawl:{source.pk}", secrets.token_hex(8)
    if not cache.add(lock_key, token, timeout=LOCK_SECONDS):
        outcome.skipped = "another crawl of this source is running"
        return outcome
    try:
        # Read the cursor under the lock: a crawl that ended since this row was loaded
        # moved it, and crawling from the older one would take lines twice.
        source.refresh_from_db()
        if not force and source.backoff_until and source.backoff_until > clock.now():
            outcome.skipped = f"backing off until {timestamp_text(source.backoff_until)}"
            return outcome
        _run(source, outcome, clock, client_factory)
    finally:
        if cache.get(lock_key) == token:
            cache.delete(lock_key)
    return outcome


def _run(
    source: LogSource, outcome: CrawlOutcome, clock: Clock, client_factory: ClientFactory
) -> None:
    started_at, started = timezone.now(), time.monotonic()
    integration = source.integration
    try:
        if integration is None or integration.kind != Integration.Kind.RAILWAY:
            raise SourceMisconfigured("The source has no Railway integration.")
        if not integration.enabled:
            raise SourceMisconfigured(f"Integration {integration.name} is disabled.")
        with client_factory(integration) as client:
            _Crawl(source, client, clock, outcome).run()
    except _Backoff as exc:
        outcome.error = str(exc)
        source.set_state(
            last_error=outcome.error, last_error_at=clock.now(), backoff_until=exc.until
        )
    except SourceMisconfigured as exc:
        outcome.error = str(exc)
        source.set_state(last_error=outcome.error, last_error_at=clock.now())
    except RailwayError as exc:
        outcome.error = str(exc)
        _back_off(source, outcome.error, clock.now())
        if integration is not None:
            integration.record_error(outcome.error)
    except Exception as exc:
        # A fault of ours (or the database's): the pages stored so far stay stored with
        # their cursor, and the next crawl resumes after them.
        log.exception("crawl of %s broke", source.name)
        outcome.error = f"The crawl broke: {type(exc).__name__}: {exc}"[:2000]
        _back_off(source, outcome.error, clock.now())
    else:
        cursor = {key: value for key, value in source.cursor.items() if key != "failures"}
        source.set_state(cursor=cursor, last_error="", last_error_at=None, backoff_until=None)
        assert integration is not None
        integration.clear_error()
    outcome.duration = timedelta(seconds=time.monotonic() - started)
    if outcome.error:
        log.warning("crawl of %s failed: %s", source.name, outcome.error)
    outcome.record = CrawlRecord.objects.create(
        source=source,
        started_at=started_at,
        finished_at=started_at + outcome.duration,
        duration=outcome.duration,
        pages=outcome.pages,
        lines=outcome.lines,
        duplicates=outcome.duplicates,
        rejected=outcome.rejected,
        new_fingerprints=outcome.new_fingerprints,
        error=outcome.error,
    )
    _prune_records(source)


def _back_off(source: LogSource, error: str, now: datetime) -> None:
    failures = int(source.cursor.get("failures", 0)) + 1
    delay = min(
        BACKOFF_BASE_SECONDS * 2 ** (failures - 1), settings.HEALTHMON_CRAWL_BACKOFF_MAX_SECONDS
    )
    source.set_state(
        cursor={**source.cursor, "failures": failures},
        last_error=error,
        last_error_at=now,
        backoff_until=now + timedelta(seconds=delay),
    )


def _prune_records(source: LogSource) -> None:
    kept = max(1, settings.HEALTHMON_CRAWL_RECORDS_KEPT)
    oldest_kept = (
        CrawlRecord.objects.filter(source=source).order_by("-id").values_list("id", flat=True)
    )[kept - 1 : kept]
    if oldest_kept:
        CrawlRecord.objects.filter(source=source, id__lt=oldest_kept[0]).delete()


Fetch = Callable[[datetime, datetime, int], list[dict[str, Any]]]


class _Crawl:
    def __init__(
        self, source: LogSource, client: RailwayClient, clock: Clock, outcome: CrawlOutcome
    ) -> None:
        self.source, self.client, self.clock, self.outcome = source, client, clock, outcome
        self.options: dict[str, Any] = source.settings or {}
        self.overlap = timedelta(seconds=settings.HEALTHMON_CRAWL_OVERLAP_SECONDS)
        self.limit = max(1, settings.HEALTHMON_CRAWL_PAGE_LINES)
        self.max_pages = MAX_WALK_PAGES
        self.waits = 0

    def run(self) -> None:
        streams = self.options.get("streams") or ["deployment"]
        if isinstance(streams, str):
            streams = [streams]
        unknown = [stream for stream in streams if stream not in STREAMS]
        if unknown:
            raise SourceMisconfigured(
                f"Unknown stream {', '.join(map(str, unknown))}: use {', '.join(STREAMS)}."
            )
        deployment = ""
        if {"deployment", "http"} & set(streams):
            deployment = self._deployment()
        for stream in streams:
            if stream == "environment":
                environment = self._required("environment_id")
                self._crawl_target(stream, environment, self._environment_fetch(environment))
            elif deployment:
                self._crawl_deployment_stream(stream, deployment)

    def _required(self, name: str) -> str:
        value = str(self.options.get(name) or "")
        if not value:
            raise SourceMisconfigured(f"The source's settings need {name}.")
        return value

    def _deployment(self) -> str:
        if self.options.get("deployment_id"):
            return str(self.options["deployment_id"])
        service, environment = self._required("service_id"), self._required("environment_id")
        return self._call(
            lambda: self.client.latest_deployment(service, environment, now=self.clock.now())
        )

    def _crawl_deployment_stream(self, stream: str, deployment: str) -> None:
        state = self.source.cursor.get(stream) or {}
        previous = state.get("target")
        if previous and previous != deployment:
            # A new deployment: finish the old one's lines, then read the new one
            # from where the old one's cursor was before this crawl.
            since = state.get("at")
            self._crawl_target(stream, previous, self._deployment_fetch(stream, previous))
            self._save_state(stream, {"target": deployment, "at": since, "seen": {}})
        self._crawl_target(stream, deployment, self._deployment_fetch(stream, deployment))

    def _deployment_fetch(self, stream: str, deployment: str) -> Fetch:
        if stream == "http":
            filter_ = str(self.options.get("http_filter") or "")
            return lambda start, end, limit: self.client.http_logs(
                deployment, start, end, limit, filter_, now=self.clock.now()
            )
        filter_ = str(self.options.get("filter") or "")
        return lambda start, end, limit: self.client.deployment_logs(
            deployment, start, end, limit, filter_, now=self.clock.now()
        )

    def _environment_fetch(self, environment: str) -> Fetch:
        filter_ = str(self.options.get("filter") or "")
        return lambda start, end, limit: self.client.environment_logs(
            environment, start, end, limit, filter_, now=self.clock.now()
        )

    def _crawl_target(self, stream: str, target: str, fetch: Fetch) -> None:
        state = self.source.cursor.get(stream) or {}
        if state.get("target") != target:
            state = {"target": target, "at": state.get("at"), "seen": {}}
        end = self.clock.now()
        try:
            lookback = timedelta(
                minutes=float(
                    self.options.get("lookback_minutes")
                    or settings.HEALTHMON_CRAWL_LOOKBACK_MINUTES
                )
            )
        except (TypeError, ValueError):
            raise SourceMisconfigured("The source's lookback_minutes must be a number.") from None
        # A new source starts `lookback` back; a known one at its cursor, however old.
        # Within this crawl, every line up to `read_until` is taken.
        read_until = None if state.get("at") else end - lookback
        while True:
            starts = [parse_timestamp(state["at"]) - self.overlap] if state.get("at") else []
            if read_until is not None:
                starts.append(read_until)
            start = max(starts)
            window_end, pages = self._walk_back(fetch, start, end)
            for page in pages:
                state = self._take_page(stream, state, page)
            if window_end >= end:
                break
            read_until = window_end
        if not state.get("at"):
            # Nothing yet: the next crawl starts here, not `lookback` before its own
            # time (which, after a long backoff, would leave a gap).
            self._save_state(stream, {**state, "at": timestamp_text(end)})

    def _walk_back(
        self, fetch: Fetch, start: datetime, end: datetime
    ) -> tuple[datetime, list[list[dict[str, Any]]]]:
        """Every line of [start, window_end], as pages oldest first; `window_end` is
        `end` unless the window held more than one walk reads (then it is halved)."""
        window_end = end
        while True:
            pages: list[list[dict[str, Any]]] = []
            upper = window_end
            while len(pages) < self.max_pages:
                lines = self._fetch(fetch, start, upper)
                pages.append(lines)
                if len(lines) < self.limit:
                    return window_end, pages[::-1]
                earliest = min(_moments(lines), default=upper)
                if earliest <= start or earliest >= upper:
                    # More lines at one instant than a page holds: nothing older to ask.
                    return window_end, pages[::-1]
                upper = earliest
            window_end = start + (window_end - start) / 2

    def _fetch(self, fetch: Fetch, start: datetime, end: datetime) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = self._call(lambda: fetch(start, end, self.limit))
        return lines

    def _take_page(
        self, stream: str, state: dict[str, Any], page: list[dict[str, Any]]
    ) -> dict[str, Any]:
        seen: dict[str, str] = dict(state.get("seen") or {})
        at = parse_timestamp(state["at"]) if state.get("at") else None
        records = []
        for line in page:
            identity = line_identity(stream, line)
            if identity in seen:
                self.outcome.duplicates += 1
                continue
            try:
                record = line_record(stream, line)
            except ValueError:
                self.outcome.rejected += 1
                continue
            assert record.at is not None
            seen[identity] = timestamp_text(record.at)
            at = record.at if at is None else max(at, record.at)
            records.append(record)
        if at is None:
            return state
        cutoff = at - self.overlap
        seen = {key: moment for key, moment in seen.items() if parse_timestamp(moment) >= cutoff}
        state = {"target": state.get("target"), "at": timestamp_text(at), "seen": seen}
        with transaction.atomic():
            if records:
                result = ingest(self.source, records)
                self.outcome.lines += result.accepted
                self.outcome.rejected += result.rejected
                self.outcome.new_fingerprints += len(result.new_fingerprints)
            self._save_state(stream, state)
        return state

    def _save_state(self, stream: str, state: dict[str, Any]) -> None:
        self.source.set_state(cursor={**self.source.cursor, stream: state})

    def _call(self, request: Callable[[], Any]) -> Any:
        """One API request, waiting out a short rate limit and retrying a failure."""
        failures = 0
        while True:
            self._wait_for_quota()
            try:
                answer = request()
            except RailwayRateLimited as exc:
                self._wait_until(exc.retry_at, str(exc))
                continue
            except RailwayUnavailable:
                failures += 1
                if failures > RETRIES:
                    raise
                self.clock.sleep(2.0**failures)
                continue
            self.outcome.pages += 1
            return answer

    def _wait_for_quota(self) -> None:
        limit = self.client.rate_limit
        if limit.remaining == 0 and limit.reset_at is not None:
            self.client.rate_limit = RateLimit()
            self._wait_until(limit.reset_at, "Railway's rate limit is used up")

    def _wait_until(self, moment: datetime, reason: str) -> None:
        wait = (moment - self.clock.now()).total_seconds()
        self.waits += 1
        # A limit that keeps coming back within one crawl ends it too.
        if wait > settings.HEALTHMON_CRAWL_MAX_WAIT_SECONDS or self.waits > MAX_WAITS:
            raise _Backoff(f"{reason}; crawling again after {timestamp_text(moment)}.", moment)
        if wait > 0:
            self.clock.sleep(wait)


def _moments(lines: list[dict[str, Any]]) -> Iterator[datetime]:
    for line in lines:
        try:
            yield parse_timestamp(str(line.get("timestamp") or ""))
        except ValueError:
            continue


__all__ = ["Clock", "CrawlOutcome", "SystemClock", "crawl_all", "crawl_source"]
