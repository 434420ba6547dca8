"""Routing on /metrics: spend and reservations read at scrape time."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client

from routing import reservations
from routing.models import Budget
from routing.reservations import reserve
from tests.metrics_scrape import scrape

pytestmark = pytest.mark.django_db


def test_a_budgets_spend_and_the_reservations_held_appear_exactly(client: Client) -> None:
    budget = Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal(10))
    settled = reserve("settled-call", Decimal("0.5"), [budget], enforced=True)
    reservations.settle(settled, Decimal("1.25"))
    reserve("call-in-flight", Decimal("0.75"), [budget], enforced=True)
    reserve("another-in-flight", Decimal("0.125"), [budget], enforced=True)

    metrics = scrape(client)

    labels = {"budget_id": str(budget.pk), "budget": "global budget", "scope": "global"}
    assert metrics.value("routing_budget_spent_usd", **labels) == 1.25
    assert metrics.value("routing_budget_reserved_usd", **labels) == 0.875
    assert metrics.value("routing_budget_limit_usd", **labels) == 10.0
    assert metrics.value("routing_reservations_held") == 2
    assert metrics.value("routing_reservations_held_usd") == 0.875


def test_a_disabled_budget_is_not_listed(client: Client) -> None:
    budget = Budget.objects.create(
        scope=Budget.Scope.SERVICE, service="billing", daily_limit=Decimal(5), enabled=False
    )

    metrics = scrape(client)

    assert not metrics.matching("routing_budget_limit_usd", budget_id=str(budget.pk))
