"""Taking in log records, whatever their source (OTLP, the Railway crawler, a file).

`ingest(source, records)` groups each record's message into a fingerprint inline
(`healthmon.shared_grouper`) and, in one transaction, adds to the stored counts:

- one `Fingerprint` row per (service, fingerprint key): total count, level, first and
  last seen, status (a resolved one seen again is regressed; an ignore runs out);
- per-minute counts per fingerprint, and per-minute record and HTTP 5xx totals per
  service (`ServiceMinute`), each one upserted row per minute;
- the last few lines of each fingerprint, in a ring of `HEALTHMON_SAMPLES_PER_FINGERPRINT`.

Nothing is stored per line. After the commit, fingerprints that became worth a task
(level and count over the settings) get one (`healthmon.fix_tasks`, in the
background), and the Health page hears which fingerprints changed.

A record no message can be made of is rejected and counted; everything else is kept.
A NUL or an unpaired surrogate is replaced, and a time in the far future or past is
counted now (the original is kept with the sample).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from controlplane import live
from healthmon import fingerprint_states
from healthmon.batch_writes import update_raising, upsert_adding, upsert_replacing
from healthmon.grouping import TracebackAssembler
from healthmon.levels import Level, level_setting
from healthmon.metrics import count_log_records
from healthmon.models import Fingerprint, LogSource, MinuteCount, Sample, ServiceMinute
from healthmon.shared_grouper import shared_grouper

HEALTH_GROUP = "health"
# A message past this is cut before grouping and storing (the sample says so).
MAX_MESSAGE_CHARS = 32_000
# Sample lines taken from one batch for one fingerprint (the ring keeps more).
SAMPLES_PER_BATCH = 3
FUTURE_TOLERANCE = timedelta(minutes=5)
NOTE_INGEST_EVERY = timedelta(seconds=1)


@dataclass(slots=True)
class LogRecord:
    message: str
    at: datetime | None = None
    level: int = Level.INFO
    service: str = ""  # empty: the source's service
    attributes: dict[str, Any] = field(default_factory=dict)
    http_status: int | None = None


@dataclass
class IngestResult:
    accepted: int = 0
    rejected: int = 0
    rejections: list[str] = field(default_factory=list)  # the first few reasons
    new_fingerprints: list[int] = field(default_factory=list)

    def reject(self, reason: str) -> None:
        self.rejected += 1
        if len(self.rejections) < 10:
            self.rejections.append(reason)


@dataclass
class _Tally:
    """What one batch adds to one fingerprint."""

    service: str
    key: str
    template: str
    message: str  # the first message, the group's example
    count: int = 0
    level: int = Level.DEBUG
    first: datetime | None = None
    last: datetime | None = None
    minutes: Counter[datetime] = field(default_factory=Counter)
    samples: list[LogRecord] = field(default_factory=list)

    def add(self, record: LogRecord, at: datetime, minute: datetime) -> None:
        self.count += 1
        self.level = max(self.level, record.level)
        self.first = at if self.first is None else min(self.first, at)
        self.last = at if self.last is None else max(self.last, at)
        self.minutes[minute] += 1
        self.samples.append(record)
        if len(self.samples) > SAMPLES_PER_BATCH * 4:
            del self.samples[:-SAMPLES_PER_BATCH]

    def merge(self, other: _Tally) -> None:
        self.count += other.count
        self.level = max(self.level, other.level)
        for moment in (other.first, other.last):
            if moment is not None:
                self.first = moment if self.first is None else min(self.first, moment)
                self.last = moment if self.last is None else max(self.last, moment)
        self.minutes.update(other.minutes)
        self.samples.extend(other.samples)


def ingest(source: LogSource, records: Sequence[LogRecord]) -> IngestResult:
    result = IngestResult()
    now = timezone.now()
    tallies: dict[tuple[str, str], _Tally] = {}
    services: dict[tuple[str, datetime], list[int]] = {}
    assembler: TracebackAssembler[LogRecord] = TracebackAssembler()
    complete: list[tuple[LogRecord, str]] = []
    oldest = now - timedelta(days=settings.HEALTHMON_HOURLY_COUNTS_DAYS)
    for record in records:
        problem = _clean(record, source, now, oldest)
        if problem:
            result.reject(problem)
            continue
        complete.extend(assembler.feed(record, record.message))
    complete.extend(assembler.flush())

    shared_grouper.refresh()
    with shared_grouper.lock:
        for record, message in complete:
            record.message = message
            grouped = shared_grouper.fingerprint(message)
            tally = tallies.get((record.service, grouped.id))
            if tally is None:
                tally = tallies[(record.service, grouped.id)] = _Tally(
                    record.service, grouped.id, grouped.template, message
                )
            else:
                tally.template = grouped.template
            assert record.at is not None
            minute = record.at.replace(second=0, microsecond=0)
            tally.add(record, record.at, minute)
            totals = services.setdefault((record.service, minute), [0, 0, 0])
            totals[0] += 1
            if record.http_status is not None:
                totals[1] += 1
                totals[2] += record.http_status >= 500
    result.accepted = len(complete)

    if tallies:
        with transaction.atomic():
            rows = _store(source, tallies, result, now)
            min_level = level_setting("HEALTHMON_TASK_MIN_LEVEL")
            min_count = settings.HEALTHMON_TASK_MIN_COUNT
            worth_a_task = [row.pk for row in rows if _worth_a_task(row, min_level, min_count)]
            _add_service_minutes(services)
            if worth_a_task:
                from healthmon.fix_tasks import open_fix_tasks_later

                open_fix_tasks_later(worth_a_task)
            live.publish(
                HEALTH_GROUP,
                "health.fingerprints",
                ids=[row.pk for row in rows],
                new=result.new_fingerprints,
            )
        _note_ingest(source, now)
    count_log_records(source.kind, ingested=result.accepted, rejected=result.rejected)
    return result


def _note_ingest(source: LogSource, now: datetime) -> None:
    """Set the source's `last_ingest_at`, at most once a `NOTE_INGEST_EVERY`, after the
    batch's transaction: every batch of a source updating that one row inside its
    transaction made the batches of a source wait for each other."""
    LogSource._base_manager.filter(pk=source.pk).filter(
        Q(last_ingest_at__isnull=True) | Q(last_ingest_at__lte=now - NOTE_INGEST_EVERY)
    ).update(last_ingest_at=now)


def _clean(record: LogRecord, source: LogSource, now: datetime, oldest: datetime) -> str:
    """Make a record storable, or say why it cannot be kept."""
    if not isinstance(record.message, str) or not record.message.strip():
        return "a record with no message body"
    message = record.message
    if "\x00" in message:
        message = message.replace("\x00", "\ufffd")
    if not message.isascii():
        message = message.encode("utf-8", "replace").decode("utf-8")  # unpaired surrogates
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS]
        record.attributes["truncated"] = True
    record.message = message
    record.service = (record.service or source.service)[:100]
    at = record.at
    if at is None:
        at = now
    elif at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    if not oldest <= at <= now + FUTURE_TOLERANCE:
        record.attributes["original_timestamp"] = at.isoformat()
        at = now
    record.at = at
    if record.attributes:
        record.attributes = _storable_attributes(record.attributes)
    return ""


def _storable_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """Attributes as JSON the databases store: values JSON has no name for as text,
    NULs and unpaired surrogates replaced. Attributes that are that already are kept
    as they are (the round trip through JSON was a tenth of a record's ingest)."""
    converted = False
    try:
        text = json.dumps(attributes, ensure_ascii=False)
    except (TypeError, ValueError):  # a value JSON has no name for (a date, bytes ...)
        text = json.dumps(attributes, default=str, ensure_ascii=False)
        converted = True
    if "\\u0000" in text or "\x00" in text:
        text = text.replace("\\u0000", "\ufffd").replace("\x00", "\ufffd")
        converted = True
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "replace").decode("utf-8")
            converted = True
    return json.loads(text) if converted else attributes


def _store(
    source: LogSource, tallies: dict[tuple[str, str], _Tally], result: IngestResult, now: datetime
) -> list[Fingerprint]:
    stored = _stored_idents(tallies)
    rows = _locked_rows(tallies) if len(stored) == len(tallies) else {}
    if len(rows) < len(tallies):
        # New fingerprints: stored under the creation lock, taken before this batch
        # locks any row. (A batch holding rows while it waited for the creation lock,
        # as the batch holding that lock waited for one of those rows, deadlocked.)
        # Rows only ever locked (below, once stored) when a row vanished between the
        # look and the lock (the retention sweep): a rare wait in the other order.
        with shared_grouper.creating():
            for tally in [tally for ident, tally in tallies.items() if ident not in rows]:
                adopted = shared_grouper.adopt(tally.key)
                if adopted is not None:
                    # Another process stored this pattern first: count it there.
                    del tallies[(tally.service, tally.key)]
                    tally.key, tally.template = adopted.id, adopted.template
                    known = tallies.get((tally.service, tally.key))
                    if known is None:
                        tallies[(tally.service, tally.key)] = tally
                    else:
                        known.merge(tally)
            stored = _stored_idents(tallies)
            absent = [tally for ident, tally in tallies.items() if ident not in stored]
            while True:
                Fingerprint.objects.bulk_create(
                    [
                        Fingerprint(
                            service=tally.service,
                            key=tally.key,
                            template=tally.template,
                            template_changed_at=now,
                            level=tally.level,
                            count=0,
                            first_seen=tally.first or now,
                            last_seen=tally.first or now,
                            source=source,
                        )
                        for tally in absent
                    ],
                    ignore_conflicts=True,
                )
                rows = _locked_rows(tallies)  # every row of the batch, in one pass
                absent = [tally for ident, tally in tallies.items() if ident not in rows]
                if not absent:
                    break
            created = {ident: row for ident, row in rows.items() if ident not in stored}
            shared_grouper.stored({key for _, key in created})
            result.new_fingerprints = sorted(row.pk for row in created.values() if row.count == 0)

    _add_counters(rows, tallies)
    for ident, tally in tallies.items():
        _add_tally(rows[ident], tally, now)
    _add_minutes(rows, tallies)
    _add_samples(rows, tallies, source)
    return list(rows.values())


def _stored_idents(tallies: dict[tuple[str, str], _Tally]) -> set[tuple[str, str]]:
    """Which of these fingerprints are stored (without locking them)."""
    found = _candidate_rows(tallies).values_list("service", "key")
    return {ident for ident in found if ident in tallies}


def _candidate_rows(tallies: dict[tuple[str, str], _Tally]) -> QuerySet[Fingerprint]:
    """The rows of these fingerprints, found by services times keys: a superset when a
    key is in several of the batch's services (the callers leave those out), but one
    short statement where an OR of (service, key) pairs took longer to plan than to
    run."""
    services = {service for service, _ in tallies}
    keys = {key for _, key in tallies}
    return Fingerprint.objects.filter(service__in=services, key__in=keys)


def _locked_rows(tallies: dict[tuple[str, str], _Tally]) -> dict[tuple[str, str], Fingerprint]:
    """The stored rows of these fingerprints, locked in id order (so two batches
    touching the same fingerprints wait for each other instead of deadlocking)."""
    if not tallies:
        return {}
    query = _candidate_rows(tallies).order_by("id")
    if connection.features.has_select_for_update:
        query = query.select_for_update()
    return {(row.service, row.key): row for row in query if (row.service, row.key) in tallies}


def _add_counters(
    rows: dict[tuple[str, str], Fingerprint], tallies: dict[tuple[str, str], _Tally]
) -> None:
    """Add every tally's count, last seen and level to its row, in one statement (one
    UPDATE per fingerprint was most of the time a batch took)."""
    values = [
        (rows[ident].pk, tally.count, tally.last, tally.level) for ident, tally in tallies.items()
    ]
    update_raising(Fingerprint, values, added=("count",), raised=("last_seen", "level"))


def _add_tally(row: Fingerprint, tally: _Tally, now: datetime) -> None:
    """What a batch changes on a row besides its counters (`_add_counters`): first
    seen, template, status."""
    assert tally.first is not None
    assert tally.last is not None
    before_status = row.status
    changes: dict[str, Any] = {}
    if tally.first < row.first_seen:
        changes["first_seen"] = tally.first
    if tally.template != row.template:
        changes.update(template=tally.template, template_changed_at=now)
    total = row.count + tally.count
    moved = fingerprint_states.on_occurrence(row, total, now)
    status = moved.get("status", before_status)
    changes.update(moved)
    if changes:
        Fingerprint.objects.filter(pk=row.pk).update(**changes)
    # Keep the row in step for what follows (tasks, samples, the page's event).
    row.count = total
    row.level = max(row.level, tally.level)
    row.last_seen = max(row.last_seen, tally.last)
    row.template = tally.template
    if status != before_status:
        row.status = status
        if "task" in changes:
            row.task = None
        fingerprint_states.record_move(row, before_status)


def _worth_a_task(row: Fingerprint, min_level: int, min_count: int) -> bool:
    return (
        row.task_id is None
        and row.status != Fingerprint.Status.IGNORED
        and row.level >= min_level
        and row.count >= min_count
    )


def _add_minutes(
    rows: dict[tuple[str, str], Fingerprint], tallies: dict[tuple[str, str], _Tally]
) -> None:
    values = [
        (rows[ident].pk, minute, count)
        for ident, tally in tallies.items()
        for minute, count in tally.minutes.items()
    ]
    upsert_adding(MinuteCount, ("fingerprint_id", "minute"), values, ("count",))


def _add_service_minutes(services: dict[tuple[str, datetime], list[int]]) -> None:
    values = [(service, minute, *totals) for (service, minute), totals in services.items()]
    upsert_adding(
        ServiceMinute,
        ("service", "minute"),
        values,
        ("records", "http_requests", "http_5xx"),
    )


def _add_samples(
    rows: dict[tuple[str, str], Fingerprint],
    tallies: dict[tuple[str, str], _Tally],
    source: LogSource,
) -> None:
    slots = settings.HEALTHMON_SAMPLES_PER_FINGERPRINT
    samples = []
    for ident, tally in tallies.items():
        row = rows[ident]
        for offset, record in enumerate(tally.samples[-SAMPLES_PER_BATCH:]):
            samples.append(
                (
                    row.pk,
                    (row.count - offset) % slots,
                    record.at,
                    record.level,
                    record.message,
                    record.attributes,
                    source.pk,
                )
            )
    upsert_replacing(
        Sample,
        ("fingerprint_id", "slot"),
        samples,
        ("at", "level", "message", "attributes", "source_id"),
    )
