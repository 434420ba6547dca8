"""The Routing page over a time range: the last 24 hours (hourly, from the log), 7 or
30 days (daily, from the rollup); a range it does not know falls back to 7 days and
says so; cancelled calls are not errors; the model mix and latency charts and the
quality per model read the same range."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from unittest import mock

import pytest
from django.utils import timezone

from chat.models import RunRating, RunStatus
from controlplane.money import usd
from routing.models import DailySpend, OperationLog
from tests.chat.runs import make_run
from tests.routing.test_routing_page import section

URL = "/routing/"
NOON = datetime.fromisoformat("2025-01-15T12:00:00-05:00")
TODAY = date(2025, 1, 15)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def noon_in_new_york(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.TIME_ZONE = "America/New_York"
    monkeypatch.setattr(timezone, "now", lambda: NOON)


def log_call(at: str, **fields: Any) -> OperationLog:
    values: dict[str, Any] = {
        "request_id": uuid.uuid4().hex,
        "operation": "summarize",
        "model_requested": "acme/large",
        "model_used": "acme/large",
        "cost_source": OperationLog.CostSource.PROVIDER,
        "status": OperationLog.Status.OK,
        **fields,
    }
    with mock.patch.object(timezone, "now", return_value=datetime.fromisoformat(at)):
        return OperationLog.objects.create(**values)


def spend(day: date, model: str = "acme/large", **fields: Any) -> DailySpend:
    values: dict[str, Any] = {"operation": "summarize", "calls": 1, "cost": Decimal("1")}
    return DailySpend.objects.create(day=day, model=model, **{**values, **fields})


@pytest.fixture
def last_day() -> None:
    """Calls of the last 24 hours (and one just before), straight in the log."""
    log_call("2025-01-15T11:15:00-05:00", cost=Decimal("0.5"), latency_ms=400)
    log_call("2025-01-15T11:45:00-05:00", cost=Decimal("0.25"), latency_ms=800)
    log_call("2025-01-15T09:10:00-05:00", status="error", latency_ms=100)
    log_call(
        "2025-01-15T09:20:00-05:00",
        model_used="acme/small",
        model_requested="acme/small",
        status="cancelled",
        cost=Decimal("0.01"),
        latency_ms=2000,
    )
    log_call("2025-01-15T10:00:00-05:00", status="refused")
    log_call("2025-01-14T12:30:00-05:00", operation="translate", cost=Decimal("3"))  # outside


def test_the_last_24_hours_are_charted_per_hour_from_the_log(client, observer, last_day):
    client.force_login(observer)
    response = client.get(URL, {"range": "24h"})
    assert response.status_code == 200
    chart = section(response, "spend-over-time")
    assert f"Spend, last 24 hours: {usd(Decimal('0.76'))} over 4 calls" in chart
    assert chart.count("<rect ") == 24
    assert f"11:00: {usd(Decimal('0.75'))} over 2 calls" in chart
    assert f"09:00: {usd(Decimal('0.01'))} over 2 calls" in chart
    assert f"13:00: {usd(Decimal(0))} over 0 calls" in chart  # yesterday's 13:00, the first
    # A refused call made no call; a cancelled one is not an error: 1 error in 4 calls.
    operations = section(response, "cost-by-operation")
    assert "<code>summarize</code></a></td><td>4</td><td>1</td><td>25.0%</td>" in operations
    assert "translate" not in operations


def test_the_range_applies_to_every_figure_of_the_page(client, observer, last_day):
    spend(TODAY - timedelta(days=3), operation="translate", calls=5, cost=Decimal("2"))
    client.force_login(observer)
    day = client.get(URL, {"range": "24h"})
    week = client.get(URL, {"range": "7d"})
    for name in ("cost-by-operation", "cost-by-kind", "model-mix", "latency-by-model"):
        assert "last 24 hours" in section(day, name)
        assert "last 7 days" in section(week, name)
    assert "translate" not in section(day, "model-mix") + section(day, "cost-by-operation")
    assert "<code>translate</code>" in section(week, "cost-by-operation")
    assert "last 7 days" in section(week, "ab-tests")
    assert "A/B splits (today: the rollup has no hours)" in section(day, "ab-tests")


def test_thirty_days_reach_further_than_seven(client, observer):
    spend(TODAY, cost=Decimal("1"))
    spend(TODAY - timedelta(days=20), model="acme/old", cost=Decimal("4"), calls=2)
    spend(TODAY - timedelta(days=31), model="acme/older", cost=Decimal("9"))
    client.force_login(observer)
    month = client.get(URL, {"range": "30d"})
    chart = section(month, "spend-over-time")
    assert f"Spend, last 30 days: {usd(Decimal('5'))} over 3 calls" in chart
    assert chart.count("<rect ") == 30
    assert "acme/old" in section(month, "model-mix")
    assert "acme/older" not in month.content.decode()
    week = client.get(URL)
    assert "acme/old<" not in section(week, "model-mix")
    assert '<a href="?range=30d" class="button primary" aria-current="page">' in (
        month.content.decode()
    )


@pytest.mark.parametrize("asked", ["1y", "%00", "7D", "<script>", "x" * 3000])
def test_an_unknown_range_shows_seven_days_and_says_so(client, observer, asked):
    spend(TODAY)
    client.force_login(observer)
    response = client.get(URL, {"range": asked})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="range-notice"' in html
    assert "(choose 24h, 7d, 30d): showing the last 7 days." in html
    assert "<script>" not in html
    assert "Spend, last 7 days" in section(response, "spend-over-time")
    assert response.context["range"].key == "7d"


def test_the_range_keeps_the_savings_calculator_unasked(client, observer):
    client.force_login(observer)
    response = client.get(URL, {"range": "24h"})
    assert not response.context["form"].is_bound
    assert "errorlist" not in section(response, "savings-calculator")
    assert 'name="range" value="24h"' in section(response, "savings-calculator")


def test_an_empty_range_says_what_to_do_in_each_chart(client, observer, last_day):
    client.force_login(observer)
    response = client.get(URL, {"range": "7d"})  # the log's calls are not rolled up yet
    chart = section(response, "spend-over-time")
    assert "No calls in the last 7 days, so there is nothing to chart yet" in chart
    assert 'href="?range=30d"' in chart
    assert "No model has answered in the last 7 days" in section(response, "model-mix")
    assert "No latencies in the last 7 days" in section(response, "latency-by-model")


def test_the_model_mix_is_a_bar_per_model_sized_by_its_share(client, observer):
    spend(TODAY, calls=3, cost=Decimal("3"))
    spend(TODAY, model="acme/small", calls=1, cost=Decimal("0.1"))
    client.force_login(observer)
    mix = section(client.get(URL), "model-mix")
    assert mix.count('class="mix-bar"') == 2
    assert "acme/large: 3 calls, 75%" in mix
    assert "acme/small: 1 calls, 25%" in mix
    # 200 px of bar for all calls: 75% is 150, 25% is 50.
    assert 'width="150.0" height="14"' in mix
    assert 'width="50.0" height="14"' in mix
    assert '<a href="/routing/models/acme/small/?range=7d">' in mix


def test_latency_is_drawn_per_model_per_day_with_p50_and_p95(client, observer):
    spend(TODAY, latency_p50_ms=500, latency_p95_ms=1000)
    spend(TODAY - timedelta(days=2), latency_p50_ms=250, latency_p95_ms=500)
    spend(TODAY, model="acme/small", latency_p50_ms=100, latency_p95_ms=200)
    client.force_login(observer)
    latency = section(client.get(URL), "latency-by-model")
    assert latency.count('class="latency-line"') == 2
    assert "1000 ms</text>" in latency  # the scale's top: the highest p95
    assert "acme/large, Mon 13: p50 250 ms, p95 500 ms" in latency
    assert "acme/large, Wed 15: p50 500 ms, p95 1000 ms" in latency
    # The day between has no calls: the lines break there instead of drawing through it.
    large = latency[latency.index('data-model="acme/large"') : latency.index("</g>")]
    assert large.count("<polyline") == 4


def test_quality_per_model_stands_beside_its_error_rate_and_cost(client, observer, operator):
    spend(TODAY, calls=10, errors=1, cost=Decimal("2"))
    spend(TODAY, model="acme/small", calls=4, errors=2, cost=Decimal("0.4"))
    for verdict in ("good", "good", "bad"):
        rated(operator, verdict, ["acme/large"])
    rated(operator, "bad", ["acme/large", "acme/small"])
    client.force_login(observer)
    quality = section(client.get(URL), "quality-by-model")
    large = row_of(quality, "acme/large")
    assert '<td class="good-share">50%</td>' in large
    assert '<td class="rating-count">4</td>' in large
    assert f"<td>10.0%</td><td>10</td><td>{usd(Decimal(2))}</td>" in large
    small = row_of(quality, "acme/small")
    assert '<td class="good-share">0%</td>' in small
    assert f"<td>50.0%</td><td>4</td><td>{usd(Decimal('0.4'))}</td>" in small


def test_ratings_of_runs_outside_the_range_do_not_count(client, observer, operator):
    spend(TODAY)
    log_call("2025-01-15T11:00:00-05:00")
    rated(operator, "good", ["acme/large"], at=NOON - timedelta(days=3))
    client.force_login(observer)
    assert '<td class="good-share">100%</td>' in section(client.get(URL), "quality-by-model")
    day = section(client.get(URL, {"range": "24h"}), "quality-by-model")
    assert '<td class="good-share">—</td>' in row_of(day, "acme/large")


def rated(user: Any, verdict: str, models: list[str], at: datetime = NOON) -> RunRating:
    run = make_run(user)
    run.__class__.objects.filter(pk=run.pk).update(status=RunStatus.STOPPED, created_at=at)
    return RunRating.objects.create(run=run, rated_by=user, verdict=verdict, answered_by=models)


def row_of(html: str, model: str) -> str:
    start = html.index(f'<tr data-model="{model}">')
    return html[start : html.index("</tr>", start)]
