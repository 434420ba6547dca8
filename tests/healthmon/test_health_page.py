"""The Health page: each service's top fingerprints of a window, filtered and sorted
by its query string; the sources with their state; how to connect one when none is."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from healthmon import fingerprint_states
from healthmon.levels import Level
from healthmon.overview import service_anchor
from tests.healthmon.health_data import ingest_lines, make_source

pytestmark = pytest.mark.django_db

URL = reverse("healthmon:index")


@pytest.fixture
def shop_and_billing():
    shop = make_source()
    billing = make_source("billing-file", "billing")
    timeout = ingest_lines(shop, "Payment gateway timed out after 30s for order 1234", 5)
    refused = ingest_lines(shop, "Card <b>refused</b> by issuer for customer 77", 2)
    slow = ingest_lines(shop, "Slow query took 900 ms on table orders", 9, level=Level.WARNING)
    invoice = ingest_lines(billing, "Invoice 55 could not be rendered: template missing", 1)
    return {"timeout": timeout, "refused": refused, "slow": slow, "invoice": invoice}


def row_ids(response) -> list[int]:
    html = response.content.decode()
    ids = []
    for chunk in html.split('<tr id="fp-')[1:]:
        ids.append(int(chunk.split('"', 1)[0]))
    return ids


@pytest.mark.parametrize("persona", ["observer", "operator", "owner"])
def test_every_tier_sees_the_top_errors_of_each_service(request, client, shop_and_billing, persona):
    client.force_login(request.getfixturevalue(persona))
    response = client.get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert f'id="{service_anchor("shop")}"' in html
    assert f'id="{service_anchor("billing")}"' in html
    # Errors by default, most frequent first; the warning waits for ?level=warning.
    ids = row_ids(response)
    fps = shop_and_billing
    assert ids.index(fps["timeout"].pk) < ids.index(fps["refused"].pk)
    assert fps["slow"].pk not in ids
    assert f'<span class="fp-count" id="fp-count-{fps["timeout"].pk}">5</span>' in html
    assert "Card &lt;b&gt;refused&lt;/b&gt;" in html  # log text is escaped
    assert 'ws-connect="/ws/health/"' in html


def test_an_outsider_is_refused_and_a_visitor_asked_to_log_in(client, outsider):
    assert client.get(URL).status_code == 302
    client.force_login(outsider)
    assert client.get(URL).status_code == 403


def test_filters_narrow_the_rows(client, observer, shop_and_billing):
    fps = shop_and_billing
    client.force_login(observer)
    by_service = row_ids(client.get(URL, {"service": "billing"}))
    assert by_service == [fps["invoice"].pk]

    warnings = row_ids(client.get(URL, {"level": "warning", "service": "shop"}))
    assert set(warnings) == {fps["timeout"].pk, fps["refused"].pk, fps["slow"].pk}
    assert warnings[0] == fps["slow"].pk  # 9 occurrences

    fingerprint_states.resolve(fps["refused"], actor=None)
    resolved = row_ids(client.get(URL, {"status": "resolved"}))
    assert resolved == [fps["refused"].pk]


def test_sorting_by_first_and_last_seen(client, observer):
    shop = make_source()
    now = timezone.now()
    old = ingest_lines(shop, "Disk almost full on volume data", at=now - timedelta(hours=3))
    ingest_lines(shop, "Cache miss storm on node 4", 3, at=now - timedelta(hours=2))
    new = ingest_lines(shop, "Queue consumer crashed with exit code 137", at=now)
    client.force_login(observer)
    assert row_ids(client.get(URL, {"sort": "first_seen"}))[0] == new.pk
    assert row_ids(client.get(URL, {"sort": "first_seen"}))[-1] == old.pk
    ingest_lines(shop, "Disk almost full on volume data", at=now + timedelta(seconds=1))
    assert row_ids(client.get(URL, {"sort": "last_seen"}))[0] == old.pk


def test_the_one_hour_window_counts_only_the_last_hour(client, observer):
    shop = make_source()
    now = timezone.now()
    earlier = ingest_lines(shop, "Worker lost its lease on job 9", 4, at=now - timedelta(hours=5))
    ingest_lines(shop, "Worker lost its lease on job 9", 1, at=now)
    gone = ingest_lines(shop, "Upstream 502 from the image service", at=now - timedelta(hours=3))
    client.force_login(observer)
    day = client.get(URL)
    assert f'id="fp-count-{earlier.pk}">5<' in day.content.decode()
    hour = client.get(URL, {"window": "1h"})
    assert f'id="fp-count-{earlier.pk}">1<' in hour.content.decode()
    assert gone.pk not in row_ids(hour)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"window": "2w"}, "Unknown window '2w': one of 1h, 24h."),
        ({"level": "loud"}, "Unknown level 'loud'"),
        ({"status": "closed"}, "Unknown status 'closed'"),
        ({"sort": "-count"}, "Unknown sort '-count'"),
        ({"service": "x" * 300}, "A service name is at most 100 characters"),
    ],
)
def test_a_bad_filter_is_named_not_a_server_error(client, observer, query, message):
    client.force_login(observer)
    response = client.get(URL, query)
    assert response.status_code == 400
    assert escape(message) in response.content.decode()
    assert b"ws-connect" not in response.content


def test_without_a_source_the_page_says_how_to_connect_one(client, owner):
    client.force_login(owner)
    html = client.get(URL).content.decode()
    assert "No log source is connected yet" in html
    assert "/v1/logs" in html
    assert "bin/manage ingest_logs --source" in html
    assert "Railway integration" in html
    assert reverse("admin:healthmon_logsource_add") in html


def test_sources_show_their_kind_last_ingest_and_last_error(client, observer):
    quiet = make_source("railway-api", "api", kind="railway")
    quiet.set_state(
        last_error="Railway answered 429 <Too Many Requests>",
        last_error_at=timezone.now(),
        backoff_until=timezone.now() + timedelta(minutes=5),
    )
    make_source("demo-shop", "demo-shop", is_demo=True)
    client.force_login(observer)
    html = client.get(URL).content.decode()
    assert "Railway crawler" in html
    assert "Railway answered 429 &lt;Too Many Requests&gt;" in html
    assert "never" in html
    assert "until " in html
    assert "No fingerprint at level error or above" in html
    assert '<span class="badge demo">demo</span>' in html


def test_the_page_makes_a_bounded_number_of_queries(
    client, observer, django_assert_max_num_queries
):
    messages = [
        "Connection refused by database primary",
        "Template rendering failed: missing block header",
        "Out of memory while resizing image",
        "Certificate expired for upstream payments",
        "Timeout waiting for lock on table orders",
        "Unhandled KeyError in checkout view",
    ]
    for index in range(4):
        source = make_source(f"svc-{index}", f"service-{index}")
        for message in messages:
            ingest_lines(source, message, 2)
    client.force_login(observer)
    with django_assert_max_num_queries(16):
        response = client.get(URL)
    assert len(row_ids(response)) == 24


def test_the_fingerprint_page_shows_template_counts_chart_and_samples(client, observer):
    fingerprint = ingest_lines(
        make_source(), "Payment gateway timed out after 30s for order 1234", 3
    )
    client.force_login(observer)
    html = client.get(reverse("healthmon:fingerprint", args=[fingerprint.pk])).content.decode()
    assert escape(fingerprint.template) in html
    assert "Occurrences in the last 24 hours" in html
    assert "Occurrences in the last hour" in html
    assert html.count('<tr class="sample">') == 3
    assert "<dt>n</dt>" in html  # a sample's attributes
    assert 'id="fp-alerts"' in html


def test_a_missing_fingerprint_is_a_404(client, observer):
    client.force_login(observer)
    assert client.get(reverse("healthmon:fingerprint", args=[999])).status_code == 404


def test_the_fingerprint_page_lists_its_alert_episodes(client, observer):
    from healthmon.alerts.evaluation import evaluate_alerts

    fingerprint = ingest_lines(make_source(), "Ledger write failed for account 77", 2)
    evaluate_alerts()  # the default "new error fingerprint" rule opens an episode
    client.force_login(observer)

    html = client.get(reverse("healthmon:fingerprint", args=[fingerprint.pk])).content.decode()

    assert html.count('<tr class="alert-episode">') == 1
    assert "New error fingerprint" in html
    assert "<strong>open</strong>" in html
