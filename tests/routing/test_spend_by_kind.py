"""Spend broken down by operation kind (chat, embeddings, transcription, speech): on
the Routing page for its week, in the admin's log and daily rollup (a summary over the
rows listed, a filter, the kind and units of each call), and the catalog's admin
showing and editing each model's kind and unit prices."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from routing.models import AIModel, DailySpend, OperationLog, Provider, Route
from tests.routing.test_routing_admin import admin_url, browser_form
from tests.routing.test_routing_page import section

pytestmark = pytest.mark.django_db

D = Decimal
NOON = datetime.fromisoformat("2025-01-15T12:00:00-05:00")
TODAY = date(2025, 1, 15)


@pytest.fixture(autouse=True)
def noon_in_new_york(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.TIME_ZONE = "America/New_York"
    monkeypatch.setattr(timezone, "now", lambda: NOON)


def spend(kind: str, cost: str, calls: int = 1, *, back: int = 0, operation: str = "") -> None:
    DailySpend.objects.create(
        day=TODAY - timedelta(days=back),
        operation=operation or kind,
        kind=kind,
        model=f"acme/{kind}",
        calls=calls,
        cost=D(cost),
    )


@pytest.fixture
def week_of_kinds() -> None:
    spend("chat", "1.5", 10)
    spend("chat", "0.25", 2, back=6)
    spend("embedding", "0.000123", 40, back=1)
    spend("transcription", "0.75", 3, back=2)
    spend("speech", "9", 1, back=7)  # a day before the page's week


def test_the_routing_page_breaks_the_weeks_spend_down_by_kind(client, observer, week_of_kinds):
    client.force_login(observer)

    card = section(client.get("/routing/"), "cost-by-kind")

    rows = [row for row in card.split("<tr>")[2:]]
    assert [row.split("</td>")[0].removeprefix("<td>") for row in rows] == [
        "Chat",
        "Transcription",
        "Embeddings",
        "Speech",
    ]
    assert "<td>12</td>" in rows[0]
    assert "$1.75" in rows[0]
    assert "$0.75" in rows[1]
    assert "$0.000123" in rows[2]
    assert "<td>0</td>" in rows[3]  # its spend is older than the week
    assert "$0.00" in rows[3]


def test_the_kind_card_shows_every_kind_at_zero_on_a_new_install(client, observer):
    client.force_login(observer)

    card = section(client.get("/routing/"), "cost-by-kind")

    for label in ("Chat", "Embeddings", "Transcription", "Speech"):
        assert f"<td>{label}</td>" in card


# The admin


def log(request_id: str, kind: str, cost: str, **units: Any) -> OperationLog:
    return OperationLog.objects.create(
        request_id=request_id, operation=kind, kind=kind, cost=D(cost), **units
    )


@pytest.fixture
def calls() -> None:
    log("c1", "chat", "0.003793", images=1, prompt_tokens=120, completion_tokens=30)
    log("c2", "chat", "0.001")
    log("e1", "embedding", "0.0000002", prompt_tokens=10)
    log("t1", "transcription", "0.0061437", audio_seconds=D("61.437"))
    log("s1", "speech", "0.01851", characters=1234)


def summary(response: Any) -> str:
    html = response.content.decode()
    start = html.index('id="spend-by-kind"')
    return html[start : html.index("</table>", start)]


def test_the_log_opens_with_spend_by_kind_over_the_calls_listed(client, observer, calls):
    client.force_login(observer)

    table = summary(client.get(admin_url(OperationLog)))

    assert "<td>Speech</td><td>1</td><td>$0.0185</td>" in table
    assert "<td>Chat</td><td>2</td><td>$0.00479</td>" in table
    assert "<td>Transcription</td><td>1</td><td>$0.00614</td>" in table
    assert "<td>Embeddings</td><td>1</td><td>$0.0000002</td>" in table


def test_filtering_the_log_by_kind_lists_and_sums_that_kind_only(client, observer, calls):
    client.force_login(observer)

    response = client.get(admin_url(OperationLog), {"kind__exact": "chat"})

    assert response.context["cl"].result_count == 2
    table = summary(response)
    assert "Chat" in table
    assert "Speech" not in table


def test_the_log_shows_each_calls_kind_and_units(client, observer, calls):
    client.force_login(observer)

    html = client.get(admin_url(OperationLog)).content.decode()

    assert "120+30 tokens, 1 image" in html
    assert "61.437 s audio" in html
    assert "1234 characters" in html
    assert '<td class="field-kind">Transcription</td>' in html


def test_the_daily_rollup_sums_its_calls_by_kind_and_filters_by_kind(
    client, observer, week_of_kinds
):
    client.force_login(observer)

    table = summary(client.get(admin_url(DailySpend)))
    only_embeddings = client.get(admin_url(DailySpend), {"kind__exact": "embedding"})

    assert "<td>Chat</td><td>12</td><td>$1.75</td>" in table
    assert "<td>Speech</td><td>1</td><td>$9.00</td>" in table
    assert only_embeddings.context["cl"].result_count == 1
    assert '<td class="field-kind">Embeddings</td>' in only_embeddings.content.decode()


def test_an_empty_list_has_no_summary(client, observer):
    client.force_login(observer)

    assert 'id="spend-by-kind"' not in client.get(admin_url(OperationLog)).content.decode()


@pytest.fixture
def whisper() -> AIModel:
    acme = Provider.objects.create(name="acme", kind=Provider.Kind.COMPATIBLE)
    return AIModel.objects.create(provider=acme, model_id="acme/whisper", kind="transcription")


def test_the_catalog_flags_the_price_a_models_kind_lacks(client, observer, whisper):
    client.force_login(observer)

    html = client.get(admin_url(AIModel), {"kind__exact": "transcription"}).content.decode()

    assert "MISSING: audio second" in html
    assert "acme/whisper" in html


def test_an_owner_sets_a_models_kind_and_unit_prices_in_the_prices_per_unit_fieldset(
    client, owner, whisper
):
    client.force_login(owner)
    page = client.get(admin_url(AIModel, "change", whisper))
    fieldsets = {fieldset.name: list(fieldset.fields) for fieldset in page.context["adminform"]}
    assert fieldsets["Prices per unit"] == [
        "price_request",
        "price_image",
        "price_audio_second",
        "price_video_second",
        "price_character",
    ]

    response = client.post(
        admin_url(AIModel, "change", whisper),
        browser_form(page, kind="transcription", price_audio_second="0.0001"),
    )

    assert response.status_code == 302
    whisper.refresh_from_db()
    assert whisper.price_audio_second == D("0.0001")
    assert not whisper.price_missing
    assert "ok" in client.get(admin_url(AIModel)).content.decode()


def test_an_observer_sees_the_unit_prices_but_cannot_change_them(client, observer, owner, whisper):
    client.force_login(owner)
    data = browser_form(client.get(admin_url(AIModel, "change", whisper)), price_audio_second="0.5")
    client.force_login(observer)

    assert client.post(admin_url(AIModel, "change", whisper), data).status_code == 403
    whisper.refresh_from_db()
    assert whisper.price_audio_second is None


def test_a_route_to_a_model_of_another_kind_shows_its_kind(client, observer, whisper):
    Route.objects.create(operation="voice-notes", primary_model=whisper)
    client.force_login(observer)

    routes = section(client.get("/routing/"), "routes")

    assert 'acme/whisper <span class="badge">Transcription</span>' in routes
    assert "offline/echo <span" in routes  # the seeded offline routes keep their badge
