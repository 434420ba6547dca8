"""What the router learns from its own log: the daily rollup the dashboards read,
spend anomalies, cheaper models, the savings calculator and A/B comparisons.

The clock is frozen at noon on 2025-01-15 in New York, so "today" and the trailing
week are fixed dates and the day boundary is not UTC midnight.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from unittest import mock

import pytest
from django.utils import timezone

from controlplane.models import NotificationChannel, NotificationDelivery
from routing import insights, tasks
from routing.models import AIModel, DailySpend, OperationLog, Provider, Recommendation, Route

NOON = datetime.fromisoformat("2025-01-15T12:00:00-05:00")
TODAY = date(2025, 1, 15)


@pytest.fixture(autouse=True)
def noon_in_new_york(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.TIME_ZONE = "America/New_York"
    monkeypatch.setattr(timezone, "now", lambda: NOON)


def log_call(at: str | datetime, **fields: Any) -> OperationLog:
    """One call in the log, written at `at` (the log stamps its own time on insert)."""
    when = datetime.fromisoformat(at) if isinstance(at, str) else at
    values: dict[str, Any] = {
        "request_id": uuid.uuid4().hex,
        "operation": "summarize",
        "model_requested": "acme/large",
        "model_used": "acme/large",
        "cost_source": OperationLog.CostSource.PROVIDER,
        "status": OperationLog.Status.OK,
        **fields,
    }
    with mock.patch.object(timezone, "now", return_value=when):
        return OperationLog.objects.create(**values)


def day_of_spend(
    day: date,
    *,
    operation: str = "summarize",
    model: str = "acme/large",
    cost: str = "0",
    calls: int = 0,
    **fields: Any,
) -> DailySpend:
    return DailySpend.objects.create(
        day=day, operation=operation, model=model, cost=Decimal(cost), calls=calls, **fields
    )


def rollup_rows(day: date) -> list[tuple[Any, ...]]:
    return sorted(
        DailySpend.objects.filter(day=day).values_list(
            "operation",
            "model",
            "service",
            "calls",
            "errors",
            "prompt_tokens",
            "completion_tokens",
            "cost",
            "latency_p50_ms",
            "latency_p95_ms",
        )
    )


@pytest.fixture
def catalog(db: Any) -> dict[str, AIModel]:
    """A catalog of its own, so the answers do not depend on the shipped seed's prices."""
    AIModel.objects.update(active=False)
    acme = Provider.objects.create(name="acme", kind=Provider.Kind.COMPATIBLE)

    def model(model_id: str, prompt: str | None, completion: str | None, **extra: Any) -> AIModel:
        return AIModel.objects.create(
            provider=acme,
            model_id=model_id,
            price_prompt=None if prompt is None else Decimal(prompt),
            price_completion=None if completion is None else Decimal(completion),
            **{"context_length": 128000, "supports_tools": True, **extra},
        )

    return {
        "large": model("acme/large", "0.00001", "0.00003"),
        "medium": model("acme/medium", "0.000001", "0.000002"),
        # Cheaper than medium, but each lacks something large can do.
        "no-tools": model("acme/no-tools", "0.0000001", "0.0000001", supports_tools=False),
        "short": model("acme/short", "0.0000002", "0.0000002", context_length=8000),
        "unpriced": model("acme/unpriced", None, None),
        "retired": model("acme/retired", "0.0000001", "0.0000002", active=False),
    }


@pytest.fixture
def email_channel(db: Any) -> NotificationChannel:
    return NotificationChannel.objects.create(
        name="ops-mail", kind=NotificationChannel.Kind.EMAIL, target="ops@example.com"
    )


# The daily rollup.


@pytest.fixture
def todays_calls(db: Any) -> None:
    """Calls on 2025-01-15 in New York, plus some either side of its boundaries."""
    for n, latency in enumerate([300, 100, 1000, 200]):
        log_call(
            f"2025-01-15T{10 + n}:00:00-05:00",
            service="billing",
            prompt_tokens=1000 + n,
            completion_tokens=200 + n,
            cost=Decimal("0.0123") * (n + 1),
            latency_ms=latency,
        )
    # An error before any model answered is counted under the model requested.
    log_call(
        "2025-01-15T16:00:00-05:00",
        service="billing",
        model_used="",
        status=OperationLog.Status.ERROR,
        error="upstream 502",
        latency_ms=400,
    )
    # A refused call never reached a model and costs nothing: not in the rollup.
    log_call(
        "2025-01-15T16:30:00-05:00",
        service="billing",
        model_used="",
        status=OperationLog.Status.REFUSED,
        cost_source=OperationLog.CostSource.NONE,
        latency_ms=9000,
    )
    log_call(
        "2025-01-15T09:00:00-05:00",
        operation="chat",
        model_requested="acme/medium",
        model_used="acme/medium",
        prompt_tokens=50,
        completion_tokens=70,
        cost=Decimal("0.000000123456789"),
        latency_ms=80,
    )
    # 23:59:59 on the 14th and on the 15th, New York time (04:59:59 UTC).
    log_call("2025-01-15T04:59:59+00:00", cost=Decimal("5"), latency_ms=1)
    log_call("2025-01-16T04:59:59+00:00", cost=Decimal("0.5"), latency_ms=500)
    log_call("2025-01-16T05:00:00+00:00", cost=Decimal("7"), latency_ms=1)


@pytest.mark.django_db
def test_the_rollup_sums_a_days_calls_per_operation_model_and_service(todays_calls):
    assert insights.rollup_day(TODAY) == 3
    assert rollup_rows(TODAY) == [
        ("chat", "acme/medium", "", 1, 0, 50, 70, Decimal("0.000000123456789"), 80, 80),
        ("summarize", "acme/large", "", 1, 0, 0, 0, Decimal("0.5"), 500, 500),
        (
            "summarize",
            "acme/large",
            "billing",
            5,
            1,
            1000 + 1001 + 1002 + 1003,
            200 + 201 + 202 + 203,
            Decimal("0.123"),
            300,
            1000,
        ),
    ]


@pytest.mark.django_db
def test_the_rollup_cost_equals_the_sum_of_the_log_to_the_last_digit(todays_calls):
    insights.rollup_day(TODAY)
    start, end = insights.day_bounds(TODAY)
    logged = sum(
        (
            row.cost
            for row in OperationLog.objects.filter(at__gte=start, at__lt=end).exclude(
                status=OperationLog.Status.REFUSED
            )
        ),
        Decimal(0),
    )
    rolled = sum(DailySpend.objects.filter(day=TODAY).values_list("cost", flat=True), Decimal(0))
    assert rolled == logged == Decimal("0.623000123456789")


@pytest.mark.django_db
def test_the_rollup_leaves_refused_calls_out(todays_calls):
    insights.rollup_day(TODAY)
    billing = DailySpend.objects.get(day=TODAY, service="billing")
    assert billing.calls == 5  # the refused sixth call is not counted
    assert billing.latency_p95_ms == 1000  # nor is its 9-second wait


@pytest.mark.django_db
def test_the_rollup_gives_the_median_and_95th_percentile_latency(db):
    for latency in range(210, 0, -10):  # 21 calls, 10 ms to 210 ms, in no order of time
        log_call("2025-01-15T10:00:00-05:00", latency_ms=latency)
    insights.rollup_day(TODAY)
    row = DailySpend.objects.get(day=TODAY)
    assert (row.calls, row.latency_p50_ms, row.latency_p95_ms) == (21, 110, 200)


@pytest.mark.django_db
def test_the_rollup_is_idempotent(todays_calls):
    insights.rollup_day(TODAY)
    first = rollup_rows(TODAY)
    assert insights.rollup_day(TODAY) == 3
    assert rollup_rows(TODAY) == first
    assert DailySpend.objects.filter(day=TODAY).count() == 3


@pytest.mark.django_db
def test_running_the_rollup_again_takes_in_calls_that_came_since(todays_calls):
    insights.rollup_day(TODAY)
    log_call("2025-01-15T11:30:00-05:00", operation="chat", cost=Decimal("1"), latency_ms=40)
    assert insights.rollup_day(TODAY) == 4
    added = DailySpend.objects.get(day=TODAY, operation="chat", model="acme/large")
    assert (added.calls, added.cost) == (1, Decimal("1"))


@pytest.mark.django_db
def test_the_rollup_follows_the_configured_time_zones_day(todays_calls):
    insights.rollup_day(date(2025, 1, 14))
    insights.rollup_day(date(2025, 1, 16))
    assert DailySpend.objects.get(day=date(2025, 1, 14)).cost == Decimal("5")
    assert DailySpend.objects.get(day=date(2025, 1, 16)).cost == Decimal("7")


@pytest.mark.django_db
def test_the_day_the_clocks_go_forward_has_23_hours(db):
    # 2025-03-09 in New York runs from 05:00 UTC to 04:00 UTC the next day.
    log_call("2025-03-09T05:00:00+00:00", cost=Decimal("1"))
    log_call("2025-03-10T03:59:59+00:00", cost=Decimal("2"))
    log_call("2025-03-10T04:00:00+00:00", cost=Decimal("4"))
    insights.rollup_day(date(2025, 3, 9))
    insights.rollup_day(date(2025, 3, 10))
    assert DailySpend.objects.get(day=date(2025, 3, 9)).cost == Decimal("3")
    assert DailySpend.objects.get(day=date(2025, 3, 10)).cost == Decimal("4")


@pytest.mark.django_db
def test_the_same_calls_fall_on_other_days_in_utc(settings, todays_calls):
    settings.TIME_ZONE = "UTC"
    insights.rollup_day(date(2025, 1, 15))
    # 04:59:59 UTC on the 15th is the 15th in UTC; 23:59:59 New York time is the 16th.
    costs = dict(
        DailySpend.objects.filter(day=date(2025, 1, 15), operation="summarize", service="")
        .values_list("model", "cost")
        .order_by()
    )
    assert costs == {"acme/large": Decimal("5")}


@pytest.mark.django_db
def test_the_rollup_of_a_day_without_calls_leaves_nothing(todays_calls):
    day_of_spend(date(2025, 1, 10), cost="3", calls=2)  # stale rows of an earlier rollup
    assert insights.rollup_day(date(2025, 1, 10)) == 0
    assert not DailySpend.objects.filter(day=date(2025, 1, 10)).exists()


@pytest.mark.django_db
def test_the_periodic_rollup_covers_today_and_yesterday(todays_calls):
    assert insights.rollup_recent() == 3 + 1
    assert set(DailySpend.objects.values_list("day", flat=True)) == {
        date(2025, 1, 14),
        date(2025, 1, 15),
    }


# Anomalies.


def steady_week(operation: str = "summarize", *, cost: str = "1", calls: int = 10) -> None:
    for back in range(1, 8):
        day_of_spend(TODAY - timedelta(days=back), operation=operation, cost=cost, calls=calls)


def deliveries(key: str) -> int:
    return NotificationDelivery.objects.filter(dedupe_key=key).count()


@pytest.mark.django_db
def test_spend_at_twice_the_weekly_average_is_an_anomaly(email_channel):
    steady_week(cost="1.5", calls=10)
    day_of_spend(TODAY, cost="3", calls=10)
    found = insights.detect_anomalies()
    assert {r.dedupe_key for r in found} == {
        "anomaly:2025-01-15:*:spend",
        "anomaly:2025-01-15:summarize:spend",
    }
    anomaly = Recommendation.objects.get(dedupe_key="anomaly:2025-01-15:summarize:spend")
    assert anomaly.kind == Recommendation.Kind.ANOMALY
    assert anomaly.operation == "summarize"
    assert anomaly.title == "Spend on operation 'summarize' is 2.0x the 7-day average"
    assert anomaly.detail.startswith(
        "$3.00 today against an average of $1.50 a day. Look for runaway agents"
    )
    assert "set or lower a budget for operation 'summarize'" in anomaly.detail
    overall = Recommendation.objects.get(dedupe_key="anomaly:2025-01-15:*:spend")
    assert overall.operation == ""
    assert overall.title == "Spend on all operations is 2.0x the 7-day average"


@pytest.mark.django_db
def test_an_anomaly_notifies_every_channel_with_its_advice(email_channel):
    steady_week(cost="1.5", calls=10)
    day_of_spend(TODAY, cost="3", calls=10)
    insights.detect_anomalies()
    delivery = NotificationDelivery.objects.get(dedupe_key="anomaly:2025-01-15:summarize:spend")
    assert delivery.channel == email_channel
    assert delivery.subject == "Spend on operation 'summarize' is 2.0x the 7-day average"
    assert "route it to a cheaper model" in delivery.body


@pytest.mark.django_db
def test_an_anomaly_notifies_once_however_often_the_check_runs_that_day(email_channel, monkeypatch):
    steady_week(cost="1.5", calls=10)
    day_of_spend(TODAY, cost="3", calls=10)
    insights.detect_anomalies()
    # Later the same day, past the notifications' own one-hour dedupe window.
    monkeypatch.setattr(timezone, "now", lambda: NOON + timedelta(hours=5))
    DailySpend.objects.filter(day=TODAY).update(cost=Decimal("4.5"))
    again = insights.detect_anomalies()
    assert len(again) == 2
    assert Recommendation.objects.count() == 2
    assert deliveries("anomaly:2025-01-15:summarize:spend") == 1
    assert deliveries("anomaly:2025-01-15:*:spend") == 1
    assert NotificationDelivery.objects.count() == 2


@pytest.mark.django_db
def test_the_next_days_anomaly_notifies_again(email_channel, monkeypatch):
    steady_week(cost="1", calls=10)
    day_of_spend(TODAY, cost="2", calls=10)
    insights.detect_anomalies()
    day_of_spend(TODAY + timedelta(days=1), cost="5", calls=10)
    monkeypatch.setattr(timezone, "now", lambda: NOON + timedelta(days=1))
    insights.detect_anomalies()
    assert deliveries("anomaly:2025-01-16:summarize:spend") == 1
    assert deliveries("anomaly:2025-01-15:summarize:spend") == 1


@pytest.mark.django_db
def test_spend_just_under_twice_the_average_is_not_an_anomaly(email_channel):
    steady_week(cost="1.5", calls=10)
    day_of_spend(TODAY, cost="2.999999", calls=29)
    assert insights.detect_anomalies() == []
    assert not Recommendation.objects.exists()
    assert not NotificationDelivery.objects.exists()


@pytest.mark.django_db
def test_three_times_the_usual_calls_is_an_anomaly_of_that_operation(email_channel):
    steady_week("chat", cost="1", calls=100)
    steady_week("agent", cost="0.1", calls=10)
    day_of_spend(TODAY, operation="chat", cost="1", calls=100)
    day_of_spend(TODAY, operation="agent", cost="0.1", calls=30)
    found = insights.detect_anomalies()
    # 130 calls in all against 110 a day is no anomaly; agent's 30 against 10 is.
    assert [r.dedupe_key for r in found] == ["anomaly:2025-01-15:agent:calls"]
    anomaly = found[0]
    assert anomaly.title == "Calls for operation 'agent' are 3.0x the 7-day average"
    assert anomaly.detail.startswith("30 calls today against an average of 10.0 a day.")
    assert deliveries("anomaly:2025-01-15:agent:calls") == 1


@pytest.mark.django_db
def test_an_operation_answered_by_several_models_is_checked_once(email_channel):
    steady_week(cost="1", calls=10)
    day_of_spend(TODAY, model="acme/large", cost="1", calls=5)
    day_of_spend(TODAY, model="acme/medium", cost="1", calls=5)
    day_of_spend(TODAY, model="acme/medium", service="web", cost="0", calls=0)
    found = insights.detect_anomalies()
    assert sorted(r.dedupe_key for r in found) == [
        "anomaly:2025-01-15:*:spend",
        "anomaly:2025-01-15:summarize:spend",
    ]


@pytest.mark.django_db
def test_a_day_with_no_history_is_no_anomaly(email_channel):
    day_of_spend(TODAY, cost="250", calls=5000)
    assert insights.detect_anomalies() == []
    assert not Recommendation.objects.exists()
    assert not NotificationDelivery.objects.exists()


@pytest.mark.django_db
def test_spend_older_than_the_trailing_week_is_not_history(email_channel):
    day_of_spend(TODAY - timedelta(days=8), cost="1", calls=1)
    day_of_spend(TODAY, cost="250", calls=5000)
    assert insights.detect_anomalies() == []


@pytest.mark.django_db
def test_a_runaway_day_in_the_log_is_found_by_the_periodic_tasks(email_channel):
    for back in range(1, 8):
        log_call(NOON - timedelta(days=back), cost=Decimal("0.01"), latency_ms=100)
        insights.rollup_day(TODAY - timedelta(days=back))
    for _ in range(3):
        log_call(NOON - timedelta(hours=1), cost=Decimal("0.01"), latency_ms=100)
    assert tasks.rollup_spend.run() == 2  # today's row, and yesterday's rebuilt the same
    assert tasks.detect_anomalies.run() == 4  # spend 3x and calls 3x, overall and per operation
    assert tasks.detect_anomalies.run() == 4
    assert NotificationDelivery.objects.count() == 4


# Cheaper models.


@pytest.fixture
def summarize_on_large(catalog: dict[str, AIModel]) -> None:
    """A week of summarize calls on acme/large: 700k prompt and 100k completion
    tokens for $10.00; the same tokens on acme/medium cost $0.90."""
    day_of_spend(
        TODAY - timedelta(days=1),
        cost="4.2",
        calls=30,
        prompt_tokens=300_000,
        completion_tokens=40_000,
    )
    day_of_spend(
        TODAY - timedelta(days=3),
        cost="5.8",
        calls=40,
        prompt_tokens=400_000,
        completion_tokens=60_000,
    )
    # Outside the trailing week: not counted.
    day_of_spend(
        TODAY - timedelta(days=7),
        cost="99",
        calls=99,
        prompt_tokens=9_000_000,
        completion_tokens=9_000_000,
    )


@pytest.mark.django_db
def test_it_recommends_the_cheapest_model_that_can_do_the_same_work(summarize_on_large):
    [recommendation] = insights.recommend_cheaper_models()
    assert recommendation.kind == Recommendation.Kind.CHEAPER_MODEL
    assert recommendation.operation == "summarize"
    assert recommendation.title == "Route 'summarize' to acme/medium"
    assert recommendation.detail == (
        "The last 7 days cost $10.00 on acme/large; the same tokens on acme/medium "
        "would cost $0.90. Try it first as an A/B split on the route."
    )
    # ($10.00 - $0.90) over 7 days is $39.00 over 30.
    assert recommendation.estimated_monthly_saving == Decimal("39")
    recommendation.refresh_from_db()
    assert recommendation.estimated_monthly_saving == Decimal("39")


@pytest.mark.django_db
def test_recommending_again_updates_the_one_recommendation(summarize_on_large):
    insights.recommend_cheaper_models()
    day_of_spend(
        TODAY, cost="0.7", calls=5, prompt_tokens=70_000, completion_tokens=0, service="web"
    )
    [recommendation] = insights.recommend_cheaper_models()
    assert Recommendation.objects.count() == 1
    # ($10.70 - $0.97) * 30 / 7
    assert recommendation.estimated_monthly_saving == Decimal("41.7")


@pytest.mark.django_db
def test_it_recommends_nothing_when_no_capable_model_is_cheaper(catalog):
    day_of_spend(
        TODAY,
        model="acme/medium",
        cost="3",
        calls=10,
        prompt_tokens=1_000_000,
        completion_tokens=1_000_000,
    )
    assert insights.recommend_cheaper_models() == []
    assert not Recommendation.objects.exists()


@pytest.mark.django_db
def test_a_model_without_tools_is_proposed_for_an_operation_that_needs_none(catalog):
    AIModel.objects.filter(pk=catalog["medium"].pk).update(supports_tools=False)
    day_of_spend(
        TODAY,
        model="acme/medium",
        cost="3",
        calls=10,
        prompt_tokens=1_000_000,
        completion_tokens=1_000_000,
    )
    [recommendation] = insights.recommend_cheaper_models()
    assert recommendation.title == "Route 'summarize' to acme/no-tools"
    # ($3.00 - $0.20) * 30 / 7
    assert recommendation.estimated_monthly_saving == Decimal("12")


@pytest.mark.django_db
def test_a_model_of_another_kind_is_never_proposed_for_a_chat_operation(catalog):
    AIModel.objects.create(
        provider=catalog["medium"].provider,
        model_id="acme/listener",
        kind="transcription",
        price_audio_second=Decimal("0.0001"),
        context_length=1_000_000,
        supports_tools=True,
    )
    day_of_spend(
        TODAY,
        model="acme/medium",
        cost="3",
        calls=10,
        prompt_tokens=1_000_000,
        completion_tokens=1_000_000,
    )
    assert insights.recommend_cheaper_models() == []


@pytest.mark.django_db
def test_it_recommends_nothing_for_operations_on_the_offline_model(catalog):
    day_of_spend(TODAY, model="offline/echo", cost="0", calls=500, prompt_tokens=10_000)
    assert insights.recommend_cheaper_models() == []


@pytest.mark.django_db
def test_it_recommends_nothing_without_calls_in_the_last_week(catalog):
    day_of_spend(TODAY - timedelta(days=7), cost="99", calls=99, prompt_tokens=9_000_000)
    assert insights.recommend_cheaper_models() == []


# The savings calculator.


@pytest.mark.django_db
def test_the_savings_calculator_prices_the_weeks_tokens_on_another_model(summarize_on_large):
    estimate = insights.savings("summarize", AIModel.objects.get(model_id="acme/medium"))
    assert estimate.operation == "summarize"
    assert estimate.current_model == "acme/large"
    assert estimate.current_cost == Decimal("10")
    assert estimate.alternative_cost == Decimal("0.9")
    assert estimate.days == 7
    assert estimate.monthly_saving == Decimal("39")


@pytest.mark.django_db
def test_the_savings_calculator_shows_a_dearer_model_as_a_negative_saving(catalog):
    day_of_spend(
        TODAY,
        model="acme/medium",
        cost="0.7",
        calls=10,
        prompt_tokens=700_000,
        completion_tokens=0,
    )
    estimate = insights.savings("summarize", catalog["large"])
    assert estimate.alternative_cost == Decimal("7")
    assert estimate.monthly_saving == Decimal("-27")
    assert estimate.monthly_extra_cost == Decimal("27")


@pytest.mark.django_db
def test_the_savings_calculator_of_an_operation_without_calls_is_zero(catalog):
    estimate = insights.savings("summarize", catalog["medium"])
    assert (estimate.current_model, estimate.current_cost, estimate.alternative_cost) == (
        "",
        Decimal(0),
        Decimal(0),
    )
    assert estimate.monthly_saving == 0


# A/B comparisons.


@pytest.fixture
def ab_route(catalog: dict[str, AIModel]) -> Route:
    route = Route.objects.create(
        operation="classify",
        primary_model=catalog["large"],
        ab_model=catalog["medium"],
        ab_percent=20,
    )
    for back, calls, errors, cost, p50 in [
        (2, 40, 2, "4", 900),
        (1, 40, 1, "4", 1100),
        (0, 20, 2, "2", 1000),
    ]:
        day_of_spend(
            TODAY - timedelta(days=back),
            operation="classify",
            cost=cost,
            calls=calls,
            errors=errors,
            latency_p50_ms=p50,
        )
    day_of_spend(
        TODAY,
        operation="classify",
        model="acme/medium",
        cost="0.5",
        calls=25,
        errors=5,
        latency_p50_ms=400,
    )
    # The same model on another operation, and old traffic: neither is in the comparison.
    day_of_spend(TODAY, operation="summarize", cost="50", calls=5, errors=5)
    day_of_spend(
        TODAY - timedelta(days=7),
        operation="classify",
        model="acme/medium",
        cost="9",
        calls=1,
        errors=1,
    )
    return route


@pytest.mark.django_db
def test_an_ab_split_compares_cost_latency_and_errors_of_its_two_models(ab_route):
    [(route, arms)] = insights.ab_comparisons()
    assert route == ab_route
    assert arms == [
        insights.Arm(
            model="acme/large",
            calls=100,
            cost_per_call=Decimal("0.1"),
            p50_ms=1000,
            error_rate=Decimal("0.05"),
        ),
        insights.Arm(
            model="acme/medium",
            calls=25,
            cost_per_call=Decimal("0.02"),
            p50_ms=400,
            error_rate=Decimal("0.2"),
        ),
    ]


@pytest.mark.django_db
def test_an_arm_without_calls_shows_zeros(catalog):
    Route.objects.create(
        operation="classify",
        primary_model=catalog["large"],
        ab_model=catalog["medium"],
        ab_percent=50,
    )
    [(_route, arms)] = insights.ab_comparisons()
    assert [(a.calls, a.cost_per_call, a.p50_ms, a.error_rate) for a in arms] == [
        (0, Decimal(0), 0, Decimal(0)),
        (0, Decimal(0), 0, Decimal(0)),
    ]


@pytest.mark.django_db
def test_routes_without_a_running_split_are_not_compared(catalog):
    Route.objects.create(operation="plain", primary_model=catalog["large"])
    Route.objects.create(
        operation="paused", primary_model=catalog["large"], ab_model=catalog["medium"]
    )
    assert insights.ab_comparisons() == []


# Dashboard figures.


@pytest.mark.django_db
def test_spend_by_operation_and_model_covers_the_last_week(ab_route):
    by_operation = {row["operation"]: row for row in insights.spend_by("operation")}
    assert by_operation["summarize"]["cost"] == Decimal("50")
    assert (by_operation["classify"]["calls"], by_operation["classify"]["cost"]) == (
        125,
        Decimal("10.5"),
    )
    assert [row["model"] for row in insights.spend_by("model")] == ["acme/large", "acme/medium"]


@pytest.mark.django_db
def test_latency_per_model_weighs_each_day_by_its_calls(ab_route):
    latency = {row["model"]: row for row in insights.latency_by_model()}
    # (40*900 + 40*1100 + 20*1000 + 5*0) / 105
    assert latency["acme/large"]["calls"] == 105
    assert latency["acme/large"]["p50"] == round(100_000 / 105)
    assert latency["acme/medium"] == {"model": "acme/medium", "calls": 25, "p50": 400, "p95": 0}
