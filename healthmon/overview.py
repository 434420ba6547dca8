"""What the Health page shows: per service, the top fingerprints of a window (the last
hour or the last 24 hours) with their counts over it and a trend sparkline, and the
log sources with their state. The page and its websocket (`healthmon.consumers`)
build rows with the same functions, so a live row is the row a reload shows.

Counts over a window come from the per-minute counts, and from the hourly ones for
hours whose minutes were rolled up, in a fixed number of queries whatever the number
of services and fingerprints.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Q, Sum
from django.db.models.functions import TruncHour
from django.http import QueryDict
from django.utils import timezone

from healthmon.levels import Level
from healthmon.models import Fingerprint, FingerprintStatus, HourCount, LogSource, MinuteCount

TOP_PER_SERVICE = 20
SPARK_WIDTH, SPARK_HEIGHT = 120, 24


@dataclass(frozen=True)
class Window:
    name: str
    label: str
    buckets: int
    bucket: timedelta
    bucket_label: str

    def start(self, now: datetime) -> datetime:
        """The first bucket's start: the window is `buckets` whole buckets ending with
        the current one, so a sparkline's bars add up to the window's count."""
        if self.bucket == timedelta(hours=1):
            current = now.replace(minute=0, second=0, microsecond=0)
        else:
            current = now.replace(second=0, microsecond=0)
        return current - self.bucket * (self.buckets - 1)


WINDOWS = {
    "1h": Window("1h", "last hour", 60, timedelta(minutes=1), "minute"),
    "24h": Window("24h", "last 24 hours", 24, timedelta(hours=1), "hour"),
}
SORTS = {
    "count": "count in the window",
    "last_seen": "last seen",
    "first_seen": "first seen",
}
LEVELS = {label: value for value, label in Level.choices}
# Each filter's accepted values (as the query string has them) and what they mean.
FILTER_CHOICES: dict[str, dict[str, Any]] = {
    "window": {name: name for name in WINDOWS},
    "level": LEVELS,
    "status": {"": "", **{value: value for value in FingerprintStatus.values}},
    "sort": {name: name for name in SORTS},
}
FILTER_DEFAULTS = {"window": "24h", "level": "error", "status": "", "sort": "count"}


@dataclass(frozen=True)
class HealthFilters:
    """The page's view, from its query string (the websocket gets the same one)."""

    window: str = "24h"
    service: str = ""
    level: int = Level.ERROR  # at least this level
    status: str = ""  # any
    sort: str = "count"

    @classmethod
    def from_query(cls, query: QueryDict) -> tuple[HealthFilters, list[str]]:
        """The filters asked for; a bad value is named in the errors and its default used."""
        errors: list[str] = []
        values: dict[str, Any] = {}
        for name, choices in FILTER_CHOICES.items():
            asked = query.get(name, FILTER_DEFAULTS[name])
            if asked in choices:
                values[name] = choices[asked]
            else:
                named = ", ".join(choice for choice in choices if choice)
                errors.append(f"Unknown {name} '{asked[:40]}': one of {named}.")
        service = query.get("service", "")
        if len(service) > 100 or "\x00" in service:
            errors.append("A service name is at most 100 characters (and has no NUL).")
        else:
            values["service"] = service
        return cls(**values), errors

    @property
    def level_name(self) -> str:
        return Level(self.level).label

    def matching(self) -> Q:
        """The fingerprints these filters show (the window aside)."""
        match = Q(level__gte=self.level)
        if self.service:
            match &= Q(service=self.service)
        if self.status:
            match &= Q(status=self.status)
        return match


@dataclass
class FingerprintRow:
    fingerprint: Fingerprint
    window_count: int
    buckets: list[int]

    @property
    def spark_bars(self) -> list[tuple[float, float, float]]:
        """(x, y, height) of each bucket's bar, in the sparkline's viewBox."""
        top = max(self.buckets, default=0) or 1
        width = SPARK_WIDTH / max(len(self.buckets), 1)
        bars = []
        for index, value in enumerate(self.buckets):
            height = round(SPARK_HEIGHT * value / top, 2) if value else 0.0
            bars.append((round(index * width, 2), round(SPARK_HEIGHT - height, 2), height))
        return bars

    @property
    def spark_bar_width(self) -> float:
        return round(max(SPARK_WIDTH / max(len(self.buckets), 1) - 0.5, 0.5), 2)


@dataclass
class ServiceSection:
    service: str
    rows: list[FingerprintRow] = field(default_factory=list)
    is_demo: bool = False

    @property
    def anchor(self) -> str:
        return service_anchor(self.service)


def service_anchor(service: str) -> str:
    """An HTML id for a service's table (names are free text)."""
    return "svc-" + hashlib.sha256(service.encode()).hexdigest()[:12]


def window_counts(match: Q, window: Window, now: datetime) -> Counter[int]:
    """Occurrences per fingerprint over the window, for the fingerprints matching."""
    since = window.start(now)
    chosen = Fingerprint.objects.filter(match).values("pk")
    counts: Counter[int] = Counter()
    for rows in (
        MinuteCount.objects.filter(minute__gte=since, fingerprint__in=chosen),
        HourCount.objects.filter(hour__gte=since, fingerprint__in=chosen),
    ):
        totals = rows.values("fingerprint").annotate(total=Sum("count"))
        counts.update(dict(totals.values_list("fingerprint", "total")))
    return counts


def trend_buckets(ids: Iterable[int], window: Window, now: datetime) -> dict[int, list[int]]:
    """Each fingerprint's occurrences per bucket of the window."""
    since = window.start(now)
    ids = list(ids)
    buckets: dict[int, list[int]] = {pk: [0] * window.buckets for pk in ids}
    if not ids:
        return buckets
    minutes = MinuteCount.objects.filter(fingerprint_id__in=ids, minute__gte=since)
    if window.bucket == timedelta(hours=1):
        rows = list(
            minutes.annotate(at=TruncHour("minute"))
            .values("fingerprint", "at")
            .annotate(total=Sum("count"))
            .values_list("fingerprint", "at", "total")
        )
        rows += HourCount.objects.filter(fingerprint_id__in=ids, hour__gte=since).values_list(
            "fingerprint", "hour", "count"
        )
    else:
        rows = list(minutes.values_list("fingerprint", "minute", "count"))
    for pk, at, total in rows:
        index = int((at - since) // window.bucket)
        if 0 <= index < window.buckets:
            buckets[pk][index] += total
    return buckets


def fingerprint_rows(
    ids: Iterable[int], filters: HealthFilters, now: datetime | None = None
) -> list[FingerprintRow]:
    """Rows of these fingerprints as the page with `filters` shows them: those that
    match and occurred in the window (the live updates' rows)."""
    now = now or timezone.now()
    window = WINDOWS[filters.window]
    match = filters.matching() & Q(pk__in=list(ids))
    counts = window_counts(match, window, now)
    shown = [pk for pk, count in counts.items() if count > 0]
    return _rows(shown, counts, window, now)


def _rows(
    ids: list[int], counts: Counter[int], window: Window, now: datetime
) -> list[FingerprintRow]:
    fingerprints = Fingerprint.objects.filter(pk__in=ids).select_related("task")
    trends = trend_buckets(ids, window, now)
    return [FingerprintRow(fp, counts[fp.pk], trends[fp.pk]) for fp in fingerprints]


def _sort_key(sort: str) -> Callable[[FingerprintRow], tuple[Any, ...]]:
    if sort == "last_seen":
        return lambda row: (row.fingerprint.last_seen, row.fingerprint.pk)
    if sort == "first_seen":
        return lambda row: (row.fingerprint.first_seen, row.fingerprint.pk)
    return lambda row: (row.window_count, row.fingerprint.last_seen, row.fingerprint.pk)


def sort_rows(rows: list[FingerprintRow], sort: str) -> list[FingerprintRow]:
    return sorted(rows, key=_sort_key(sort), reverse=True)


def service_sections(filters: HealthFilters, now: datetime | None = None) -> list[ServiceSection]:
    """Each service's top fingerprints of the window, services by name."""
    now = now or timezone.now()
    window = WINDOWS[filters.window]
    counts = window_counts(filters.matching(), window, now)
    candidates = [pk for pk, count in counts.items() if count > 0]
    # Ranking needs each candidate's service and times: one light query, then full
    # rows (with task and trend) for the top of each service only.
    light = Fingerprint.objects.filter(pk__in=candidates).only("service", "first_seen", "last_seen")
    by_service: dict[str, list[FingerprintRow]] = defaultdict(list)
    for fingerprint in light:
        by_service[fingerprint.service].append(
            FingerprintRow(fingerprint, counts[fingerprint.pk], [])
        )
    top = [
        row.fingerprint.pk
        for rows in by_service.values()
        for row in sort_rows(rows, filters.sort)[:TOP_PER_SERVICE]
    ]
    full = {row.fingerprint.pk: row for row in _rows(top, counts, window, now)}
    demo = demo_services()
    sections = []
    for service in sorted(by_service):
        ranked = sort_rows(by_service[service], filters.sort)[:TOP_PER_SERVICE]
        rows = [full[row.fingerprint.pk] for row in ranked if row.fingerprint.pk in full]
        sections.append(ServiceSection(service, rows, service in demo))
    return sections


def demo_services() -> set[str]:
    return set(LogSource.objects.filter(is_demo=True).values_list("service", flat=True))


def known_services() -> list[str]:
    """Every service the filter may name: those with fingerprints or a source."""
    services = set(Fingerprint.objects.values_list("service", flat=True).distinct())
    services.update(LogSource.objects.values_list("service", flat=True))
    return sorted(services)


def overview_context(filters: HealthFilters, errors: list[str]) -> dict[str, object]:
    sections = service_sections(filters)
    sources = list(LogSource.objects.select_related("integration"))
    return {
        "filters": filters,
        "filter_errors": errors,
        "sections": sections,
        "sources": sources,
        "services": known_services(),
        "windows": WINDOWS,
        "window": WINDOWS[filters.window],
        "sorts": SORTS,
        "levels": list(LEVELS),
        "statuses": FingerprintStatus.choices,
        "now": timezone.now(),
        "has_fingerprints": bool(sections) or Fingerprint.objects.exists(),
    }


# The chat bots' /status

STATUS_FINGERPRINTS = 3
OPEN_FINGERPRINT_STATUSES = (FingerprintStatus.UNRESOLVED, FingerprintStatus.REGRESSED)


def status_lines(user: Any) -> list[str]:
    """Open error fingerprints (unresolved or regressed, error level and above): how
    many, and the ones seen most recently."""
    open_errors = Fingerprint.objects.filter(
        status__in=OPEN_FINGERPRINT_STATUSES, level__gte=Level.ERROR
    )
    count = open_errors.count()
    if not count:
        return ["Errors: no open error fingerprints."]
    lines = [f"Errors: {count} open fingerprint{'s' if count != 1 else ''}, latest:"]
    for fingerprint in open_errors.order_by("-last_seen")[:STATUS_FINGERPRINTS]:
        template = " ".join(fingerprint.template.split())[:80]
        lines.append(f"  {fingerprint.service}: {template}, seen {fingerprint.count} times")
    return lines
