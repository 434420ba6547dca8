"""What the router learns from its own log: daily rollups (what dashboards read),
spend anomalies, cheaper models, A/B comparisons and a savings calculator."""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Count, QuerySet, Sum
from django.utils import timezone

from controlplane.money import ZERO, MoneySum, usd
from controlplane.notifications import notify
from routing.budgets import budget_day
from routing.models import AIModel, DailySpend, OperationLog, Recommendation, Route
from routing.models.catalog import CallKind
from routing.quality import flag_poorly_rated, rated_worse, recent_quality

log = logging.getLogger(__name__)

SPEND_FACTOR = 2  # a day's spend at least this many times the trailing average
CALLS_FACTOR = 3  # a day's operations count at least this many times the average
TRAILING_DAYS = 7


def day_bounds(day: date) -> tuple[datetime, datetime]:
    zone = timezone.get_default_timezone()
    start = datetime.combine(day, time.min, tzinfo=zone)
    return start, start + timedelta(days=1)


def percentile[N: (int, float)](values: Sequence[N], share: float) -> N:
    """The nearest-rank percentile: the smallest value with at least `share` (0 to 1)
    of the values at or below it. The one percentile of the project (the rollup's
    latencies, the benchmarks' figures)."""
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def rollup_day(day: date) -> int:
    """Recompute the day's rows of `DailySpend` from the log. Idempotent."""
    start, end = day_bounds(day)
    calls = OperationLog.objects.filter(at__gte=start, at__lt=end).exclude(
        status=OperationLog.Status.REFUSED
    )
    groups: dict[tuple[str, str, str, str], dict[str, Any]] = defaultdict(
        lambda: {"calls": 0, "errors": 0, "prompt": 0, "completion": 0, "cost": ZERO, "latency": []}
    )
    rows = calls.values_list(
        "operation",
        "kind",
        "model_used",
        "model_requested",
        "service",
        "status",
        "prompt_tokens",
        "completion_tokens",
        "cost",
        "latency_ms",
    )
    for (
        operation,
        kind,
        used,
        requested,
        service,
        status,
        prompt,
        completion,
        cost,
        latency,
    ) in rows:
        group = groups[(operation, kind, used or requested, service)]
        group["calls"] += 1
        group["errors"] += status == OperationLog.Status.ERROR
        group["prompt"] += prompt
        group["completion"] += completion
        group["cost"] += cost
        group["latency"].append(latency)
    with transaction.atomic():
        DailySpend.objects.filter(day=day).delete()
        DailySpend.objects.bulk_create(
            DailySpend(
                day=day,
                operation=operation,
                kind=kind,
                model=model,
                service=service,
                calls=group["calls"],
                errors=group["errors"],
                prompt_tokens=group["prompt"],
                completion_tokens=group["completion"],
                cost=group["cost"],
                latency_p50_ms=percentile(group["latency"], 0.5),
                latency_p95_ms=percentile(group["latency"], 0.95),
            )
            for (operation, kind, model, service), group in groups.items()
        )
    return len(groups)


def rollup_recent() -> int:
    """Today's rollup, and yesterday's (calls that finished just after midnight)."""
    today = budget_day()
    return rollup_day(today) + rollup_day(today - timedelta(days=1))


@dataclass(frozen=True)
class DayTotals:
    day: date
    cost: Decimal
    calls: int


def daily_totals(
    days: int, *, until: date | None = None, operation: str | None = None
) -> list[DayTotals]:
    until = until or budget_day()
    first = until - timedelta(days=days - 1)
    rows = DailySpend.objects.filter(day__gte=first, day__lte=until)
    if operation:
        rows = rows.filter(operation=operation)
    sums: dict[date, tuple[Decimal, int]] = {
        row["day"]: (row["cost"] or ZERO, row["calls"] or 0)
        for row in rows.values("day").annotate(cost=MoneySum("cost"), calls=Sum("calls"))
    }
    days_list = [first + timedelta(days=n) for n in range(days)]
    return [DayTotals(day, *sums.get(day, (ZERO, 0))) for day in days_list]


def _operations(rows: QuerySet[DailySpend]) -> list[str]:
    # Without order_by() the default ordering's day and model join the SELECT
    # DISTINCT, and an operation comes back once per day and model.
    return list(rows.order_by("operation").values_list("operation", flat=True).distinct())


def detect_anomalies(day: date | None = None) -> list[Recommendation]:
    """Flag a day whose spend is >= 2x, or whose calls are >= 3x, the trailing 7-day
    average, overall and per operation; each anomaly notifies once."""
    day = day or budget_day()
    operations = [None, *_operations(DailySpend.objects.filter(day=day))]
    found = []
    for operation in operations:
        history = daily_totals(TRAILING_DAYS + 1, until=day, operation=operation)
        today, trailing = history[-1], history[:-1]
        average_cost = sum((d.cost for d in trailing), ZERO) / TRAILING_DAYS
        average_calls = Decimal(sum(d.calls for d in trailing)) / TRAILING_DAYS
        scope = f"operation '{operation}'" if operation else "all operations"
        if average_cost > 0 and today.cost >= SPEND_FACTOR * average_cost:
            found.append(
                _anomaly(
                    day,
                    operation,
                    "spend",
                    f"Spend on {scope} is {today.cost / average_cost:.1f}x the 7-day average",
                    f"{usd(today.cost)} today against an average of {usd(average_cost)} a day. "
                    "Look for runaway agents or a retry loop; set or lower a budget for "
                    f"{scope}, or route it to a cheaper model.",
                )
            )
        if average_calls > 0 and today.calls >= CALLS_FACTOR * average_calls:
            found.append(
                _anomaly(
                    day,
                    operation,
                    "calls",
                    f"Calls for {scope} are {today.calls / average_calls:.1f}x the 7-day average",
                    f"{today.calls} calls today against an average of {average_calls:.1f} a day. "
                    "Check which service or user sends them (Observability > Operation log) "
                    "and whether a kill switch or a budget is needed.",
                )
            )
    return [r for r in found if r is not None]


def _anomaly(
    day: date, operation: str | None, kind: str, title: str, detail: str
) -> Recommendation | None:
    key = f"anomaly:{day}:{operation or '*'}:{kind}"
    recommendation, created = Recommendation.objects.get_or_create(
        dedupe_key=key,
        defaults={
            "kind": Recommendation.Kind.ANOMALY,
            "operation": operation or "",
            "title": title,
            "detail": detail,
        },
    )
    if created:
        notify(title, detail, dedupe_key=key)
    return recommendation


@dataclass(frozen=True)
class Savings:
    operation: str
    current_model: str
    alternative: AIModel
    current_cost: Decimal  # over the window
    alternative_cost: Decimal
    days: int

    @property
    def monthly_saving(self) -> Decimal:
        return (self.current_cost - self.alternative_cost) * 30 / self.days

    @property
    def monthly_extra_cost(self) -> Decimal:
        """What the alternative would cost more a month (a negative saving, as people say it)."""
        return -self.monthly_saving


def savings(operation: str, alternative: AIModel, *, days: int = TRAILING_DAYS) -> Savings:
    """What the last `days` of an operation would have cost on another model."""
    first = budget_day() - timedelta(days=days - 1)
    rows = DailySpend.objects.filter(operation=operation, day__gte=first)
    totals = rows.aggregate(
        cost=MoneySum("cost"), prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens")
    )
    busiest = rows.values("model").annotate(n=Sum("calls")).order_by("-n").first()
    alternative_cost = (alternative.price_prompt or ZERO) * (totals["prompt"] or 0) + (
        alternative.price_completion or ZERO
    ) * (totals["completion"] or 0)
    return Savings(
        operation=operation,
        current_model=busiest["model"] if busiest else "",
        alternative=alternative,
        current_cost=totals["cost"] or ZERO,
        alternative_cost=alternative_cost,
        days=days,
    )


def recommend_cheaper_models() -> list[Recommendation]:
    """For each operation of the last week, the cheapest catalog model that can do
    what the current one does, when it would save money and people did not rate its
    replies worse; and a flag on each model whose replies people rated poorly."""
    first = budget_day() - timedelta(days=TRAILING_DAYS - 1)
    catalog = [
        m
        for m in AIModel.objects.filter(active=True).select_related("provider")
        if not m.price_missing and not m.is_offline
    ]
    by_id = {m.model_id: m for m in AIModel.objects.select_related("provider")}
    rated = recent_quality()
    made: list[Recommendation] = flag_poorly_rated(rated)
    operations = _operations(DailySpend.objects.filter(day__gte=first))
    for operation in operations:
        current = by_id.get(
            DailySpend.objects.filter(operation=operation, day__gte=first)
            .values("model")
            .annotate(n=Sum("calls"))
            .order_by("-n")
            .first()["model"]  # type: ignore[index]
        )
        if current is None or current.is_offline or current.price_missing:
            continue
        candidates = [
            m
            for m in catalog
            if m.pk != current.pk
            and m.kind == current.kind
            and (m.supports_tools or not current.supports_tools)
            and (m.context_length or 0) >= (current.context_length or 0)
            and (m.price_per_1k() or ZERO) < (current.price_per_1k() or ZERO)
        ]
        # Cheaper is no saving if people rated the replies worse (`routing.quality`).
        candidates = [m for m in candidates if not rated_worse(m.model_id, current.model_id, rated)]
        if not candidates:
            continue
        cheapest = min(candidates, key=lambda m: m.price_per_1k() or ZERO)
        estimate = savings(operation, cheapest)
        if estimate.monthly_saving <= 0:
            continue
        recommendation, _ = Recommendation.objects.update_or_create(
            dedupe_key=f"cheaper:{operation}:{cheapest.model_id}",
            defaults={
                "kind": Recommendation.Kind.CHEAPER_MODEL,
                "operation": operation,
                "title": f"Route '{operation}' to {cheapest.model_id}",
                "detail": (
                    f"The last {TRAILING_DAYS} days cost {usd(estimate.current_cost)} on "
                    f"{current.model_id}; the same tokens on {cheapest.model_id} would cost "
                    f"{usd(estimate.alternative_cost)}. Try it first as an A/B split on the route."
                ),
                "estimated_monthly_saving": estimate.monthly_saving,
            },
        )
        made.append(recommendation)
    return made


@dataclass(frozen=True)
class Arm:
    model: str
    calls: int
    cost_per_call: Decimal
    p50_ms: int
    error_rate: Decimal


def ab_comparisons(days: int = TRAILING_DAYS) -> list[tuple[Route, list[Arm]]]:
    """Each A/B split's arms over the last `days`: cost per call, latency, errors."""
    first = budget_day() - timedelta(days=days - 1)
    routes = list(
        Route.objects.exclude(ab_model=None)
        .filter(ab_percent__gt=0)
        .select_related("primary_model", "ab_model")
    )
    # One read of the rollup for every split, so the page's queries do not grow
    # with the number of routes.
    per_arm: dict[tuple[str, str], list[tuple[int, int, Decimal, int]]] = defaultdict(list)
    rows = DailySpend.objects.filter(
        day__gte=first, operation__in=[route.operation for route in routes]
    ).values_list("operation", "model", "calls", "errors", "cost", "latency_p50_ms")
    for operation, model_id, calls, errors, cost, p50 in rows:
        per_arm[(operation, model_id)].append((calls, errors, cost, p50))
    results = []
    for route in routes:
        arms = []
        for model in (route.primary_model, route.ab_model):
            assert model is not None
            days_rows = per_arm.get((route.operation, model.model_id), [])
            calls = sum(c for c, _, _, _ in days_rows)
            cost = sum((c for _, _, c, _ in days_rows), ZERO)
            errors = sum(e for _, e, _, _ in days_rows)
            arms.append(
                Arm(
                    model=model.model_id,
                    calls=calls,
                    cost_per_call=cost / calls if calls else ZERO,
                    p50_ms=percentile([p for _, _, _, p in days_rows], 0.5) if days_rows else 0,
                    error_rate=Decimal(errors) / calls if calls else ZERO,
                )
            )
        results.append((route, arms))
    return results


def spend_by(field: str, days: int = TRAILING_DAYS) -> list[dict[str, Any]]:
    first = budget_day() - timedelta(days=days - 1)
    return list(
        DailySpend.objects.filter(day__gte=first)
        .values(field)
        .annotate(cost=MoneySum("cost"), calls=Sum("calls"), errors=Sum("errors"))
        .order_by("-cost", field)
    )


def spend_by_kind(days: int = TRAILING_DAYS) -> list[dict[str, Any]]:
    """Cost, calls and share of the cost per operation kind over the window: every
    kind, those without calls at zero, so the page shows what each kind costs."""
    found = {row["kind"]: row for row in spend_by("kind", days)}
    total = sum((row["cost"] or ZERO for row in found.values()), ZERO)
    rows = []
    for kind, label in CallKind.choices:
        row = found.get(kind, {})
        cost = row.get("cost") or ZERO
        rows.append(
            {
                "kind": kind,
                "label": label,
                "calls": row.get("calls") or 0,
                "errors": row.get("errors") or 0,
                "cost": cost,
                "share": cost * 100 / total if total else ZERO,
            }
        )
    return sorted(rows, key=lambda r: -r["cost"])


def spend_by_kind_on(day: date) -> list[dict[str, Any]]:
    """Each operation kind's calls and cost on one day, from the log itself (exact and
    current, where the rollup may be a minute behind); refused calls cost nothing and
    are not counted. Every kind, those without calls at zero."""
    start, end = day_bounds(day)
    found: dict[str, dict[str, Any]] = {
        row["kind"]: dict(row)
        for row in OperationLog.objects.filter(at__gte=start, at__lt=end)
        .exclude(status=OperationLog.Status.REFUSED)
        .order_by()
        .values("kind")
        .annotate(cost=MoneySum("cost"), calls=Count("pk"))
    }
    return [
        {
            "kind": kind,
            "label": label,
            "calls": found.get(kind, {}).get("calls", 0),
            "cost": found.get(kind, {}).get("cost") or ZERO,
        }
        for kind, label in CallKind.choices
    ]


def latency_by_model(days: int = TRAILING_DAYS) -> list[dict[str, Any]]:
    """p50 and p95 per model over the window (the busiest day's figures weigh most)."""
    first = budget_day() - timedelta(days=days - 1)
    per_model: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for model, calls, p50, p95 in DailySpend.objects.filter(day__gte=first).values_list(
        "model", "calls", "latency_p50_ms", "latency_p95_ms"
    ):
        per_model[model].append((calls, p50, p95))
    rows = []
    for model, days_rows in per_model.items():
        calls = sum(c for c, _, _ in days_rows)
        rows.append(
            {
                "model": model,
                "calls": calls,
                "p50": round(sum(c * p for c, p, _ in days_rows) / calls) if calls else 0,
                "p95": max(p for _, _, p in days_rows),
            }
        )
    return sorted(rows, key=lambda r: -r["calls"])
