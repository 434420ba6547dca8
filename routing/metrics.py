"""Routing's metrics on `/metrics` (see `controlplane.metrics`).

Counted where an AI call ends, when its log row is written (`routing.calls`): calls
by how they ended, refusals by reason, and the latency the product adds to a call.
Read at scrape time: today's spend by budget and the reservations held, with the
project's money code; amounts are exact Decimals until they are written out (as
floats, the only number Prometheus knows).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.db.models import Count
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from controlplane.money import MoneySum
from routing import budgets
from routing.models import OperationLog, Reservation

if TYPE_CHECKING:
    from routing.calls import CallContext

# What counting costs a call: one counter and one histogram (timeit on the 2-core
# machine, busy: about 7 us in memory, 10-35 us in multiprocess mode, where each is
# a write to a memory-mapped file), against the 3-4 ms the gateway adds at p50. For
# a whole (not streamed) gateway answer it runs with the settlement, after the answer.
# An operation named by a gateway caller that has no route: its own label value would
# let any key holder add series without bound (X-Operation is free text).
UNKNOWN_OPERATION = "(unknown)"

CALLS = Counter(
    "routing_calls_total",
    "AI calls by how they ended (ok, error, refused); via the gateway or from the product.",
    ["via", "operation", "status"],
)
REFUSALS = Counter(
    "routing_call_refusals_total",
    "AI calls refused before anything was spent, by reason (budget_exceeded, "
    "approval_required, feature_off, not_routable).",
    ["via", "operation", "reason"],
)
# The product's own share of a call's latency: from the call's start to the moment the
# provider has the request (switches, route, approval, budget reservation); for a
# refused call, the time to the refusal. Milliseconds normally; the buckets say where.
ADDED_LATENCY = Histogram(
    "routing_call_added_latency_seconds",
    "Time the product adds to an AI call before the provider has it (a refusal: until "
    "it is refused).",
    ["via", "operation", "status"],
    buckets=(0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)


def _operation_label(context: CallContext) -> str:
    if not context.via_gateway:
        return context.operation  # named by the product's own code
    reading = context.reading
    if reading is not None and context.operation in reading.table.routes:
        return context.operation
    return UNKNOWN_OPERATION


def count_call(
    context: CallContext,
    row: OperationLog,
    *,
    provider_started: float | None = None,
    refusal: str = "",
) -> None:
    """A call ended and `row` is its log row. `provider_started`: when the provider
    was first asked (`time.perf_counter()`), None if it never was; `refusal`: the
    refusal's code."""
    via = "gateway" if context.via_gateway else "internal"
    operation = _operation_label(context)
    ended_ours = time.perf_counter() if provider_started is None else provider_started
    CALLS.labels(via, operation, row.status).inc()
    ADDED_LATENCY.labels(via, operation, row.status).observe(ended_ours - context.started)
    if refusal:
        REFUSALS.labels(via, operation, refusal).inc()


def scrape() -> Iterable[Metric]:
    """Today's spend by budget (two queries) and the reservations held (one)."""
    labels = ["budget_id", "budget", "scope"]
    spent = GaugeMetricFamily(
        "routing_budget_spent_usd", "Spent today on each enabled budget (USD).", labels=labels
    )
    reserved = GaugeMetricFamily(
        "routing_budget_reserved_usd",
        "Reserved today on each enabled budget by calls in flight (USD).",
        labels=labels,
    )
    limit = GaugeMetricFamily(
        "routing_budget_limit_usd", "Each enabled budget's daily limit (USD).", labels=labels
    )
    for row in budgets.spend_today():
        values = [str(row.budget.pk), str(row.budget), row.budget.scope]
        spent.add_metric(values, float(row.spent))
        reserved.add_metric(values, float(row.reserved))
        limit.add_metric(values, float(row.limit))
    held = Reservation.objects.filter(status=Reservation.Status.HELD).aggregate(
        count=Count("pk"), amount=MoneySum("amount")
    )
    yield from (spent, reserved, limit)
    yield GaugeMetricFamily(
        "routing_reservations_held",
        "Budget reservations held: calls in flight, or never settled.",
        value=held["count"],
    )
    yield GaugeMetricFamily(
        "routing_reservations_held_usd",
        "Money held by those reservations (USD).",
        value=float(held["amount"] or 0),
    )
