"""What the Routing page and its drill-downs show over a time range: calls, errors,
cost and latency per bucket (an hour for the last 24 hours, a day otherwise), per
operation, per model and per kind.

Days come from the rollup (`DailySpend`, what dashboards read); the last 24 hours
come from the log itself, since the rollup has no hours. Errors are calls whose
status is error: a refused call made no call, and a call its caller stopped
(cancelled) is not the model's failure."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from controlplane.money import ZERO
from routing.budgets import budget_day
from routing.insights import day_bounds, percentile
from routing.models import DailySpend, OperationLog
from routing.models.catalog import CallKind


@dataclass(frozen=True)
class TimeRange:
    key: str
    label: str  # "last 7 days": what the page's headings say
    hourly: bool
    buckets: int

    @property
    def days(self) -> int:
        """Whole days the range covers (what the savings and A/B figures read)."""
        return 1 if self.hourly else self.buckets

    def bounds(self) -> tuple[datetime, datetime]:
        """The range as instants: whole hours up to the current one, or whole local days
        up to today."""
        if self.hourly:
            # Local hours: in a zone half an hour off UTC, buckets start at :00 locally.
            now = timezone.localtime(timezone.now(), timezone.get_default_timezone())
            end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
            return end - timedelta(hours=self.buckets), end
        until = budget_day()
        return day_bounds(until - timedelta(days=self.buckets - 1))[0], day_bounds(until)[1]

    def bucket_labels(self) -> list[str]:
        start, _ = self.bounds()
        if self.hourly:
            zone = timezone.get_default_timezone()
            return [
                f"{timezone.localtime(start + timedelta(hours=n), zone):%H:00}"
                for n in range(self.buckets)
            ]
        first = budget_day() - timedelta(days=self.buckets - 1)
        return [f"{first + timedelta(days=n):%a %d}" for n in range(self.buckets)]


RANGES = {
    "24h": TimeRange("24h", "last 24 hours", hourly=True, buckets=24),
    "7d": TimeRange("7d", "last 7 days", hourly=False, buckets=7),
    "30d": TimeRange("30d", "last 30 days", hourly=False, buckets=30),
}
DEFAULT_RANGE = "7d"


def pick_range(asked: str | None) -> tuple[TimeRange, str]:
    """The range a page was asked for, and what to tell the person when it was not one
    of ours (the page then shows the default, and says so)."""
    if not asked or asked == DEFAULT_RANGE:
        return RANGES[DEFAULT_RANGE], ""
    if asked in RANGES:
        return RANGES[asked], ""
    choices = ", ".join(RANGES)
    return (
        RANGES[DEFAULT_RANGE],
        f"Unknown range {asked[:40]!r} (choose {choices}): showing the last 7 days.",
    )


@dataclass(frozen=True)
class Slice:
    """Calls of one operation, kind and model in one bucket."""

    bucket: int
    operation: str
    kind: str
    model: str
    calls: int
    errors: int
    cost: Decimal
    p50: int
    p95: int


@dataclass
class Tally:
    calls: int = 0
    errors: int = 0
    cost: Decimal = ZERO

    def add(self, part: Slice) -> None:
        self.calls += part.calls
        self.errors += part.errors
        self.cost += part.cost

    @property
    def error_rate(self) -> Decimal:
        return Decimal(self.errors * 100) / self.calls if self.calls else ZERO

    @property
    def cost_per_call(self) -> Decimal:
        return self.cost / self.calls if self.calls else ZERO


def calls_in(
    time_range: TimeRange, *, operation: str | None = None, model: str | None = None
) -> QuerySet[OperationLog]:
    """The log's calls in the range (refused ones made no call), of one operation or
    one model if asked; a call without a model used counts for the model requested."""
    start, end = time_range.bounds()
    calls = OperationLog.objects.filter(at__gte=start, at__lt=end).exclude(
        status=OperationLog.Status.REFUSED
    )
    if operation is not None:
        calls = calls.filter(operation=operation)
    if model is not None:
        calls = calls.filter(Q(model_used=model) | Q(model_used="", model_requested=model))
    return calls


def read_slices(
    time_range: TimeRange, *, operation: str | None = None, model: str | None = None
) -> list[Slice]:
    """The range's calls as slices, in one query."""
    if time_range.hourly:
        return _hourly_slices(time_range, operation=operation, model=model)
    first = budget_day() - timedelta(days=time_range.buckets - 1)
    rows = DailySpend.objects.filter(day__gte=first)
    if operation is not None:
        rows = rows.filter(operation=operation)
    if model is not None:
        rows = rows.filter(model=model)
    return [
        Slice((day - first).days, op, kind, model_id, calls, errors, cost, p50, p95)
        for day, op, kind, model_id, calls, errors, cost, p50, p95 in rows.values_list(
            "day",
            "operation",
            "kind",
            "model",
            "calls",
            "errors",
            "cost",
            "latency_p50_ms",
            "latency_p95_ms",
        ).order_by()
    ]


def _hourly_slices(time_range: TimeRange, **only: str | None) -> list[Slice]:
    start, _ = time_range.bounds()
    groups: dict[tuple[int, str, str, str], dict[str, Any]] = defaultdict(
        lambda: {"errors": 0, "cost": ZERO, "latency": []}
    )
    rows = calls_in(time_range, **only).values_list(
        "at", "operation", "kind", "model_used", "model_requested", "status", "cost", "latency_ms"
    )
    for at, operation, kind, used, requested, status, cost, latency in rows.order_by():
        hour = int((at - start).total_seconds() // 3600)
        group = groups[(hour, operation, kind, used or requested)]
        group["errors"] += status == OperationLog.Status.ERROR
        group["cost"] += cost
        group["latency"].append(latency)
    return [
        Slice(
            hour,
            operation,
            kind,
            model,
            len(group["latency"]),
            group["errors"],
            group["cost"],
            percentile(group["latency"], 0.5),
            percentile(group["latency"], 0.95),
        )
        for (hour, operation, kind, model), group in groups.items()
    ]


@dataclass
class ModelLatency:
    model: str
    calls: int
    p50: int
    p95: int
    # Per bucket: (p50, p95), or None for a bucket without calls of the model.
    series: list[tuple[int, int] | None] = field(default_factory=list)


def _latency(model: str, parts: list[Slice], buckets: int) -> ModelLatency:
    """A bucket's p50 is weighted by calls across its slices; its p95 is the worst
    slice's (percentiles of parts cannot be added, so this is an upper bound)."""
    series: list[tuple[int, int] | None] = [None] * buckets
    for bucket in range(buckets):
        here = [p for p in parts if p.bucket == bucket and p.calls]
        if here:
            calls = sum(p.calls for p in here)
            series[bucket] = (
                round(sum(p.calls * p.p50 for p in here) / calls),
                max(p.p95 for p in here),
            )
    calls = sum(p.calls for p in parts)
    return ModelLatency(
        model=model,
        calls=calls,
        p50=round(sum(p.calls * p.p50 for p in parts) / calls) if calls else 0,
        p95=max((p.p95 for p in parts), default=0),
        series=series,
    )


@dataclass
class Report:
    """Every figure of a page over its range, folded from the slices."""

    time_range: TimeRange
    slices: list[Slice]

    @property
    def total(self) -> Tally:
        return _fold(self.slices)

    def per_bucket(self) -> list[Tally]:
        tallies = [Tally() for _ in range(self.time_range.buckets)]
        for part in self.slices:
            tallies[part.bucket].add(part)
        return tallies

    def by(self, attribute: str) -> list[tuple[str, Tally]]:
        """(value, tally) per operation, model or kind, dearest first."""
        groups: dict[str, list[Slice]] = defaultdict(list)
        for part in self.slices:
            groups[getattr(part, attribute)].append(part)
        folded = [(name, _fold(parts)) for name, parts in groups.items()]
        return sorted(folded, key=lambda row: (-row[1].cost, -row[1].calls, row[0]))

    def by_kind(self) -> list[dict[str, Any]]:
        """Every kind, those without calls at zero, with its share of the cost."""
        found = dict(self.by("kind"))
        total = self.total.cost
        rows = [
            {
                "kind": kind,
                "label": label,
                "tally": found.get(kind, Tally()),
                "share": found.get(kind, Tally()).cost * 100 / total if total else ZERO,
            }
            for kind, label in CallKind.choices
        ]
        return sorted(rows, key=lambda row: -row["tally"].cost)

    def latency_by_model(self) -> list[ModelLatency]:
        groups: dict[str, list[Slice]] = defaultdict(list)
        for part in self.slices:
            groups[part.model].append(part)
        rows = [_latency(model, parts, self.time_range.buckets) for model, parts in groups.items()]
        return sorted(rows, key=lambda row: (-row.calls, row.model))


def _fold(parts: Iterable[Slice]) -> Tally:
    tally = Tally()
    for part in parts:
        tally.add(part)
    return tally


def report(
    time_range: TimeRange, *, operation: str | None = None, model: str | None = None
) -> Report:
    return Report(time_range, read_slices(time_range, operation=operation, model=model))
