"""Routing's metrics on `/metrics` (see `controlplane.metrics`).

Read at scrape time: today's spend by budget and the reservations held, with the
project's money code; amounts are exact Decimals until they are written out (as
floats, the only number Prometheus knows).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Count
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from controlplane.money import MoneySum
from routing import budgets
from routing.models import Reservation


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
