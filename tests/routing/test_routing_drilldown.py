"""A drill-down per operation and per model: its calls, errors, cost and latency over
the range, the other side's breakdown, and its recent calls, paginated, in a bounded
number of queries."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from controlplane.money import usd
from tests.routing.test_routing_page import section
from tests.routing.test_routing_ranges import log_call, rated, spend

NOON = datetime.fromisoformat("2025-01-15T12:00:00-05:00")
TODAY = date(2025, 1, 15)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def noon_in_new_york(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.TIME_ZONE = "America/New_York"
    monkeypatch.setattr(timezone, "now", lambda: NOON)


def calls(count: int, **fields: Any) -> None:
    for n in range(count):
        log_call(f"2025-01-15T11:{n % 60:02d}:00-05:00", **fields)


def test_an_operation_shows_its_totals_models_and_recent_calls(client, observer, operator):
    spend(TODAY, calls=8, errors=2, cost=Decimal("4"), latency_p50_ms=300, latency_p95_ms=900)
    spend(TODAY, model="acme/small", calls=2, cost=Decimal("0.2"))
    spend(TODAY, operation="translate", calls=50, cost=Decimal("50"))
    log_call("2025-01-15T11:00:00-05:00", user=operator, cost=Decimal("0.5"), latency_ms=321)
    log_call("2025-01-15T11:01:00-05:00", status="error", error="upstream 502", service="ci")
    log_call("2025-01-15T11:02:00-05:00", operation="translate")
    client.force_login(observer)
    response = client.get("/routing/operations/summarize/")
    assert response.status_code == 200
    totals = section(response, "drilldown-totals")
    assert "<strong>10</strong> calls · <strong>2</strong> errors (20.0%)" in totals
    assert f"<strong>{usd(Decimal('4.2'))}</strong> spent" in totals
    breakdown = section(response, "drilldown-breakdown")
    assert '<a href="/routing/models/acme/large/?range=7d"><code>acme/large</code></a>' in breakdown
    assert "<td>8</td><td>2</td><td>25.0%</td>" in breakdown
    assert "translate" not in breakdown
    assert "acme/large, Wed 15: p50 300 ms, p95 900 ms" in section(response, "latency-by-model")
    recent = section(response, "recent-calls")
    assert "Recent calls (2)" in recent
    assert recent.count('class="call-row') == 2
    assert "oscar-operator" in recent
    assert "321 ms" in recent
    assert "upstream 502" in recent
    assert ">ci<" in recent


def test_a_model_with_a_slash_in_its_id_shows_its_operations_and_rating(client, observer, operator):
    spend(TODAY, calls=4, cost=Decimal("1"))
    spend(TODAY, operation="translate", calls=6, cost=Decimal("2"))
    spend(TODAY, model="acme/small", calls=9)
    rated(operator, "good", ["acme/large"])
    rated(operator, "bad", ["acme/large", "acme/small"])
    log_call("2025-01-15T11:00:00-05:00")
    log_call("2025-01-15T11:00:00-05:00", model_used="", status="error")
    log_call("2025-01-15T11:00:00-05:00", model_used="acme/small")
    client.force_login(observer)
    response = client.get("/routing/models/acme/large/")
    assert response.status_code == 200
    assert "Model <code>acme/large</code>" in response.content.decode()
    totals = section(response, "drilldown-totals")
    assert "<strong>10</strong> calls" in totals
    assert '<strong id="own-good-share">50%</strong> of 2 ratings' in totals
    breakdown = section(response, "drilldown-breakdown")
    assert "Operations it served" in breakdown
    assert '<a href="/routing/operations/translate/?range=7d">' in breakdown
    # A call that failed before any model answered counts for the model asked for.
    assert "Recent calls (2)" in section(response, "recent-calls")


def test_the_drill_down_follows_the_range(client, observer):
    spend(TODAY - timedelta(days=3), calls=5)
    log_call("2025-01-15T11:00:00-05:00", cost=Decimal("0.5"))
    client.force_login(observer)
    day = client.get("/routing/operations/summarize/", {"range": "24h"})
    assert "<strong>1</strong> call ·" in section(day, "drilldown-totals")
    assert section(day, "spend-over-time").count("<rect ") == 24
    week = client.get("/routing/operations/summarize/", {"range": "7d"})
    assert "<strong>5</strong> calls" in section(week, "drilldown-totals")
    bad = client.get("/routing/operations/summarize/", {"range": "forever"})
    assert bad.status_code == 200
    assert "Unknown range &#x27;forever&#x27;" in bad.content.decode()


def test_an_operation_without_calls_says_where_to_look(client, observer):
    client.force_login(observer)
    response = client.get("/routing/operations/nothing-here/")
    assert response.status_code == 200
    assert "No calls of <code>nothing-here</code> in the last 7 days" in section(
        response, "recent-calls"
    )
    assert "No calls of nothing-here in the last 7 days" in section(response, "spend-over-time")
    assert "no ratings yet" not in response.content.decode()  # an operation is not rated


def test_a_name_longer_than_any_in_the_log_is_a_404(client, observer):
    client.force_login(observer)
    assert client.get(f"/routing/models/{'m' * 201}/").status_code == 404
    assert client.get(f"/routing/models/{'m' * 200}/").status_code == 200


@pytest.mark.parametrize("persona", ["observer", "operator", "owner"])
def test_every_tier_sees_a_drill_down_and_outsiders_do_not(client, persona, request, outsider):
    client.force_login(request.getfixturevalue(persona))
    assert client.get("/routing/models/acme/large/").status_code == 200
    client.force_login(outsider)
    assert client.get("/routing/models/acme/large/").status_code == 403
    assert client.get("/routing/operations/summarize/").status_code == 403
    client.logout()
    assert client.get("/routing/operations/summarize/").status_code == 302
    client.force_login(request.getfixturevalue(persona))
    assert client.post("/routing/operations/summarize/").status_code == 405


def test_recent_calls_are_paginated_and_a_bad_page_is_no_error(client, observer):
    calls(30)
    client.force_login(observer)
    first = section(client.get("/routing/operations/summarize/"), "recent-calls")
    assert first.count('class="call-row') == 25
    assert "Page 1 of 2" in first
    assert 'href="?range=7d&amp;page=2">Older →</a>' in first
    second = section(client.get("/routing/operations/summarize/", {"page": "2"}), "recent-calls")
    assert second.count('class="call-row') == 5
    for page in ("999", "x", "-1", "0"):
        response = client.get("/routing/operations/summarize/", {"page": page})
        assert response.status_code == 200
        assert 'class="call-row' in section(response, "recent-calls")


def queries_for(client: Any, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return len(captured)


@pytest.mark.parametrize(
    "url", ["/routing/operations/summarize/?range=24h", "/routing/models/acme/large/"]
)
def test_a_drill_down_runs_as_many_queries_for_60_calls_as_for_3(client, observer, operator, url):
    calls(3, user=operator)
    spend(TODAY, calls=3)
    client.force_login(observer)
    client.get(url)  # warm the session and the content types
    with_3 = queries_for(client, url)
    calls(57, user=observer)
    for n in range(12):
        spend(TODAY - timedelta(days=n % 7), model=f"acme/m{n}", calls=5)
        rated(operator, "good", [f"acme/m{n}", "acme/large"])
    assert queries_for(client, url) == with_3


def test_the_routing_page_runs_as_many_queries_for_12_models_as_for_2(client, observer, operator):
    spend(TODAY)
    spend(TODAY, model="acme/small")
    log_call("2025-01-15T11:00:00-05:00")
    rated(operator, "good", ["acme/large"])
    client.force_login(observer)
    for asked in ("7d", "24h", "30d"):
        client.get("/routing/", {"range": asked})
        before = queries_for(client, f"/routing/?range={asked}")
        for n in range(12):
            spend(TODAY - timedelta(days=n % 7), model=f"acme/{asked}-{n}", operation=f"op{n}")
            log_call("2025-01-15T11:00:00-05:00", model_used=f"acme/{asked}-{n}")
            rated(operator, "bad", [f"acme/{asked}-{n}"])
        assert queries_for(client, f"/routing/?range={asked}") == before
