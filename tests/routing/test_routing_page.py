"""The Routing page: budgets today, the week's spend, cost by operation and model,
latency, routes, modes, recommendations, A/B splits and the savings calculator."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from controlplane.money import usd
from routing.models import (
    AIModel,
    Budget,
    DailySpend,
    Policy,
    Provider,
    Recommendation,
    Route,
    RouteFallback,
)
from routing.reservations import reserve, settle

URL = "/routing/"
NOON = datetime.fromisoformat("2025-01-15T12:00:00-05:00")
TODAY = date(2025, 1, 15)


@pytest.fixture(autouse=True)
def noon_in_new_york(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.TIME_ZONE = "America/New_York"
    monkeypatch.setattr(timezone, "now", lambda: NOON)


@pytest.fixture
def catalog(db: Any) -> dict[str, AIModel]:
    acme = Provider.objects.create(name="acme", kind=Provider.Kind.COMPATIBLE)

    def model(model_id: str, prompt: str, completion: str) -> AIModel:
        return AIModel.objects.create(
            provider=acme,
            model_id=model_id,
            context_length=128000,
            supports_tools=True,
            price_prompt=Decimal(prompt),
            price_completion=Decimal(completion),
        )

    return {
        "large": model("acme/large", "0.00001", "0.00003"),
        "medium": model("acme/medium", "0.000001", "0.000002"),
        "small": model("acme/small", "0.0000001", "0.0000002"),
    }


def make_routes(catalog: dict[str, AIModel], first: int, count: int) -> None:
    """Routes as an Owner configures them: a policy, two fallbacks and an A/B split."""
    normal = Policy.objects.get(mode="normal")
    for n in range(first, first + count):
        route = Route.objects.create(
            operation=f"op-{n:02d}",
            primary_model=catalog["large"],
            policy=normal,
            ab_model=catalog["medium"],
            ab_percent=10,
            approval_threshold=Decimal("0.5") if n % 2 else None,
            spends_money=n % 3 == 0,
        )
        RouteFallback.objects.create(route=route, model=catalog["medium"], position=0)
        RouteFallback.objects.create(route=route, model=catalog["small"], position=1)
        DailySpend.objects.create(
            day=TODAY, operation=route.operation, model="acme/large", calls=3, cost=Decimal("0.3")
        )


@pytest.fixture
def busy_week(catalog: dict[str, AIModel], operator: Any) -> None:
    """A week of calls, budgets with spend today, an A/B split and a recommendation."""
    everything = Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal("10"))
    Budget.objects.create(scope=Budget.Scope.OPERATION, operation="chat", daily_limit=Decimal("4"))
    Budget.objects.create(scope=Budget.Scope.USER, user=operator, daily_limit=Decimal("1"))
    settle(reserve("done", Decimal("2"), [everything]), Decimal("2.5"))
    Route.objects.filter(operation="summarize").update(
        primary_model=catalog["large"], ab_model=catalog["medium"], ab_percent=25
    )
    for back, cost in enumerate(["2.5", "1.25", "0", "4"]):
        DailySpend.objects.create(
            day=TODAY - timedelta(days=back),
            operation="summarize",
            model="acme/large",
            calls=10,
            errors=1,
            prompt_tokens=70_000,
            completion_tokens=10_000,
            cost=Decimal(cost),
            latency_p50_ms=800,
            latency_p95_ms=2400,
        )
    DailySpend.objects.create(
        day=TODAY,
        operation="summarize",
        model="acme/medium",
        calls=4,
        errors=1,
        cost=Decimal("0.08"),
        latency_p50_ms=300,
        latency_p95_ms=700,
    )
    Recommendation.objects.create(
        kind=Recommendation.Kind.CHEAPER_MODEL,
        operation="summarize",
        title="Route 'summarize' to acme/medium",
        detail="The last 7 days cost less on acme/medium.",
        estimated_monthly_saving=Decimal("39"),
        dedupe_key="cheaper:summarize:acme/medium",
    )
    Recommendation.objects.create(
        kind=Recommendation.Kind.ANOMALY,
        title="A dismissed anomaly",
        dedupe_key="anomaly:dismissed",
        dismissed_at=NOON,
    )


def section(response: Any, name: str) -> str:
    """The HTML of one card of the page, by its id."""
    html = response.content.decode()
    start = html.index(f'id="{name}"')
    return html[start : html.index("</section>", start)]


# Who sees it.


@pytest.mark.django_db
def test_an_anonymous_visitor_is_sent_to_the_login_page(client):
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={quote(URL)}"


@pytest.mark.django_db
def test_an_outsider_gets_403(client, outsider, busy_week):
    client.force_login(outsider)
    response = client.get(URL)
    assert response.status_code == 403
    assert b"acme/large" not in response.content


@pytest.mark.django_db
@pytest.mark.parametrize("persona", ["observer", "operator", "owner"])
def test_every_tier_sees_the_page_with_real_figures(client, persona, request, busy_week):
    client.force_login(request.getfixturevalue(persona))
    response = client.get(URL)
    assert response.status_code == 200
    budgets = section(response, "budgets-today")
    assert "global budget" in budgets
    assert usd(Decimal("2.5")) in budgets
    assert "25.0%" in budgets
    assert "operation chat budget" in budgets
    assert "user oscar-operator budget" in budgets
    week = usd(Decimal("7.83"))
    assert f"Spend, last 7 days: {week} over 44 calls" in section(response, "spend-over-time")
    by_operation = section(response, "cost-by-operation")
    assert f"<code>summarize</code></a></td><td>44</td><td>5</td><td>11.4%</td><td>{week}</td>" in (
        by_operation
    )
    by_model = section(response, "model-mix")
    assert "<code>acme/large</code></a></td><td>40</td><td>91%</td>" in by_model
    assert "<code>acme/medium</code></a></td><td>4</td><td>9%</td>" in by_model
    by_quality = section(response, "quality-by-model")
    assert f"<td>10.0%</td><td>40</td><td>{usd(Decimal('7.75'))}</td>" in by_quality
    assert f"<td>25.0%</td><td>4</td><td>{usd(Decimal('0.08'))}</td>" in by_quality
    latency = section(response, "latency-by-model")
    assert "<code>acme/large</code></td><td>40</td><td>800 ms</td><td>2400 ms</td>" in latency
    routes = section(response, "routes")
    assert "<code>summarize</code>" in routes
    assert "25% → acme/medium" in routes
    recommendations = section(response, "recommendations")
    assert "Route &#x27;summarize&#x27; to acme/medium" in recommendations
    assert f"saves about {usd(Decimal(39))}/month" in recommendations
    assert "A dismissed anomaly" not in recommendations
    ab = section(response, "ab-tests")
    per_call = usd(Decimal("0.19375"))
    assert f"<code>acme/large</code></td><td>40</td><td>{per_call}</td><td>800 ms</td><td>10%" in ab
    per_call = usd(Decimal("0.02"))
    assert f"<code>acme/medium</code></td><td>4</td><td>{per_call}</td><td>300 ms</td><td>25%" in ab


@pytest.mark.django_db
def test_the_week_chart_is_drawn_server_side_with_a_bar_per_day(client, observer, busy_week):
    client.force_login(observer)
    chart = section(client.get(URL), "spend-over-time")
    assert chart.count("<rect ") == 7
    assert f"Wed 15: {usd(Decimal('2.58'))} over 14 calls" in chart
    assert f"Tue 14: {usd(Decimal('1.25'))} over 10 calls" in chart
    assert f"Thu 09: {usd(Decimal(0))} over 0 calls" in chart
    # The dearest day (Sunday the 12th, $4) is the tallest bar: the plot's full height,
    # the fourth of seven 137 px columns.
    assert '<rect x="415.4" y="0.0" width="129.1" height="160.0"' in chart


@pytest.mark.django_db
def test_only_an_owner_is_offered_the_links_to_edit_routes(client, observer, owner):
    client.force_login(observer)
    assert "Edit routes" not in section(client.get(URL), "routes")
    client.force_login(owner)
    assert "Edit routes" in section(client.get(URL), "routes")


# Empty states.


@pytest.mark.django_db
@pytest.mark.parametrize("persona", ["observer", "operator", "owner"])
def test_a_new_install_shows_what_to_do_in_each_empty_card(client, persona, request):
    client.force_login(request.getfixturevalue(persona))
    response = client.get(URL)
    assert response.status_code == 200
    assert "No budgets yet, so nothing stops runaway spend" in section(response, "budgets-today")
    chart = section(response, "spend-over-time")
    assert "No calls in the last 7 days, so there is nothing to chart yet" in chart
    assert "Chat</a> page or send a request to the /v1/ gateway" in chart
    assert "<svg" not in chart
    assert "No calls in the last 7 days" in section(response, "cost-by-operation")
    assert "No model has answered in the last 7 days" in section(response, "model-mix")
    assert "No latencies in the last 7 days" in section(response, "latency-by-model")
    assert "rate their replies good or bad" in section(response, "quality-by-model")
    assert "Nothing to recommend yet" in section(response, "recommendations")
    assert "No A/B split is running" in section(response, "ab-tests")
    # The seeded routes run on the offline model, and say so.
    assert 'offline/echo <span class="badge">offline</span>' in section(response, "routes")


@pytest.mark.django_db
def test_without_routes_the_page_says_every_call_would_be_refused(client, observer):
    Route.objects.all().delete()
    client.force_login(observer)
    response = client.get(URL)
    assert response.status_code == 200
    assert "No routes: every call would be refused" in section(response, "routes")


@pytest.mark.django_db
def test_a_budget_with_a_zero_limit_shows_no_percentage(client, observer):
    Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal("0"))
    client.force_login(observer)
    budgets = section(client.get(URL), "budgets-today")
    assert "global budget" in budgets
    assert "—%" in budgets


# Query counts.


def queries_for_page(client: Any) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(URL)
    assert response.status_code == 200
    return len(captured)


@pytest.mark.django_db
def test_the_page_runs_as_many_queries_for_30_routes_as_for_3(client, observer, catalog):
    Route.objects.all().delete()
    make_routes(catalog, 0, 3)
    client.force_login(observer)
    client.get(URL)  # warm the session and the content types
    with_3 = queries_for_page(client)
    make_routes(catalog, 3, 27)
    with_30 = queries_for_page(client)
    assert Route.objects.count() == 30
    assert with_30 == with_3


@pytest.mark.django_db
def test_all_30_routes_are_on_the_page(client, observer, catalog):
    Route.objects.all().delete()
    make_routes(catalog, 0, 30)
    client.force_login(observer)
    response = client.get(URL)
    routes = section(response, "routes")
    assert routes.count("acme/medium, acme/small") == 30
    assert "spends money" in routes
    assert f"over {usd(Decimal('0.5'))}" in routes
    assert section(response, "ab-tests").count("(10% to acme/medium)") == 30


# The savings calculator.


@pytest.mark.django_db
def test_the_savings_calculator_shows_the_monthly_saving(client, operator, busy_week, catalog):
    client.force_login(operator)
    response = client.get(URL, {"operation": "summarize", "model": catalog["medium"].pk})
    assert response.status_code == 200
    savings = section(response, "savings-calculator")
    # The week's 280k prompt and 40k completion tokens cost $7.83; on acme/medium, $0.36.
    assert f"Last 7 days of <code>summarize</code>: {usd(Decimal('7.83'))}" in savings
    assert f"on acme/medium: {usd(Decimal('0.36'))}" in savings
    # (7.83 - 0.36) * 30 / 7
    assert f"saves {usd((Decimal('7.83') - Decimal('0.36')) * 30 / 7)}" in savings
    assert response.context["savings"].monthly_saving == (
        (Decimal("7.83") - Decimal("0.36")) * 30 / 7
    )


@pytest.mark.django_db
def test_the_savings_calculator_says_what_a_dearer_model_would_cost_more(client, operator, catalog):
    DailySpend.objects.create(
        day=TODAY,
        operation="summarize",
        model="acme/medium",
        calls=10,
        prompt_tokens=700_000,
        cost=Decimal("0.7"),
    )
    client.force_login(operator)
    response = client.get(URL, {"operation": "summarize", "model": catalog["large"].pk})
    savings = section(response, "savings-calculator")
    # $7.00 on acme/large against $0.70: (7 - 0.7) * 30 / 7 = $27.00 a month more.
    assert f"costs {usd(Decimal(27))} more" in savings
    assert "$-" not in savings


@pytest.mark.django_db
def test_the_savings_form_rejects_an_unknown_operation(client, observer, catalog):
    client.force_login(observer)
    response = client.get(URL, {"operation": "no-such-op", "model": catalog["medium"].pk})
    assert response.status_code == 200
    form = response.context["form"]
    assert "operation" in form.errors
    assert response.context["savings"] is None
    assert "Select a valid choice. no-such-op is not one of the available choices." in section(
        response, "savings-calculator"
    )


@pytest.mark.django_db
@pytest.mark.parametrize("model", ["999999", "not-a-number", ""])
def test_the_savings_form_rejects_an_unknown_model(client, observer, model):
    client.force_login(observer)
    response = client.get(URL, {"operation": "summarize", "model": model})
    assert response.status_code == 200
    assert "model" in response.context["form"].errors
    assert response.context["savings"] is None
    assert "errorlist" in section(response, "savings-calculator")


@pytest.mark.django_db
def test_the_savings_form_offers_the_routes_and_active_models(client, observer, catalog):
    AIModel.objects.filter(pk=catalog["small"].pk).update(active=False)
    client.force_login(observer)
    form = client.get(URL).context["form"]
    assert [value for value, _ in form.fields["operation"].choices] == [
        "agent",
        "chat",
        "embeddings",
        "speech",
        "summarize",
        "transcribe",
    ]
    offered = set(form.fields["model"].queryset.values_list("model_id", flat=True))
    assert {"acme/large", "acme/medium"} <= offered
    assert "acme/small" not in offered


@pytest.mark.django_db
def test_the_page_only_answers_get(client, owner):
    client.force_login(owner)
    assert client.post(URL, {"operation": "summarize"}).status_code == 405
