"""Routing on /metrics: calls, refusals and added latency counted where a call ends
(through the real gateway), and spend and reservations read at scrape time."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from controlplane.models import FeatureToggle
from controlplane.money import dumps_exact
from routing import reservations
from routing.models import Budget, ServiceKey
from routing.reservations import reserve
from tests.metrics_scrape import scrape

pytestmark = pytest.mark.django_db

CHAT_URL = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Hello there"}]

Committed = Callable[[], AbstractContextManager[Any]]


@pytest.fixture
def raw_key() -> str:
    return ServiceKey.issue(name="digest", service="reports", default_operation="summarize")[1]


def call(client: Client, key: str, headers: dict[str, str] | None = None) -> Any:
    return client.post(
        CHAT_URL,
        data=dumps_exact({"messages": HELLO}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {key}", **(headers or {})},
    )


def test_a_gateway_call_counts_under_its_operation_and_status(client: Client, raw_key: str) -> None:
    labels = {"via": "gateway", "operation": "summarize", "status": "ok"}
    before = scrape(client)

    assert call(client, raw_key).status_code == 200

    after = scrape(client)
    assert after.value("routing_calls_total", **labels) == (
        before.value("routing_calls_total", **labels) + 1
    )
    latency = "routing_call_added_latency_seconds_count"
    assert after.value(latency, **labels) == before.value(latency, **labels) + 1
    # Counted once: no refusal for a call that went through.
    assert after.matching("routing_call_refusals_total", operation="summarize") == (
        before.matching("routing_call_refusals_total", operation="summarize")
    )


def test_a_streamed_call_counts_once_its_stream_has_ended(client: Client, raw_key: str) -> None:
    labels = {"via": "gateway", "operation": "summarize", "status": "ok"}
    before = scrape(client).value("routing_calls_total", **labels)

    response = client.post(
        CHAT_URL,
        data=dumps_exact({"messages": HELLO, "stream": True}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {raw_key}"},
    )

    assert response.status_code == 200
    assert scrape(client).value("routing_calls_total", **labels) == before + 1


def test_a_refused_call_counts_as_a_refusal_with_its_reason(
    client: Client, raw_key: str, committed: Committed
) -> None:
    with committed():
        FeatureToggle.objects.update_or_create(
            key="operation.summarize.enabled", defaults={"enabled": False}
        )
    refused = {"via": "gateway", "operation": "summarize", "status": "refused"}
    reason = {"via": "gateway", "operation": "summarize", "reason": "feature_off"}
    before = scrape(client)

    assert call(client, raw_key).status_code == 503

    after = scrape(client)
    assert after.value("routing_calls_total", **refused) == (
        before.value("routing_calls_total", **refused) + 1
    )
    assert after.value("routing_call_refusals_total", **reason) == (
        before.value("routing_call_refusals_total", **reason) + 1
    )
    latency = "routing_call_added_latency_seconds_count"
    assert after.value(latency, **refused) == before.value(latency, **refused) + 1


def test_an_operation_a_caller_names_without_a_route_is_counted_as_unknown(
    client: Client, raw_key: str
) -> None:
    # X-Operation is free text: one series per name would grow without bound.
    unknown = {"via": "gateway", "operation": "(unknown)", "reason": "not_routable"}
    before = scrape(client)

    response = call(client, raw_key, {"X-Operation": "made-up-operation-123"})

    assert response.status_code == 404
    after = scrape(client)
    assert after.value("routing_call_refusals_total", **unknown) == (
        before.value("routing_call_refusals_total", **unknown) + 1
    )
    assert not after.matching("routing_calls_total", operation="made-up-operation-123")


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
