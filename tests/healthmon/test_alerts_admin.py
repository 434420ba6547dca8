"""Alert rules in the operator panel: every tier sees them, only Owners change them
(audited, bad parameters refused), and the alert history nobody rewrites."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from controlplane.models import AuditEvent
from healthmon.alerts.evaluation import evaluate_alerts
from healthmon.levels import Level
from healthmon.models import Alert, AlertKind, AlertRule, Fingerprint
from tests.healthmon.alerting import make_channel, messages, minutes, this_minute

pytestmark = pytest.mark.django_db

RULES = "/admin/healthmon/alertrule/"
ALERTS = "/admin/healthmon/alert/"
RULE_FORM = {
    "name": "Checkout 5xx",
    "kind": AlertKind.SUSTAINED_5XX,
    "enabled": "on",
    "service": "checkout",
    "min_level": Level.ERROR,
    "quiet_minutes": 60,
    "multiplier": "3",
    "floor": 20,
    "window_minutes": 5,
    "baseline_minutes": 60,
    "threshold": "0.02",
    "minutes": 3,
    "min_requests": 50,
}


def make_alerts(count: int) -> None:
    now = this_minute()
    Fingerprint.objects.bulk_create(
        Fingerprint(
            service="api",
            key=f"k{n}",
            template=f"failure {n}",
            level=Level.ERROR,
            count=1,
            first_seen=now - minutes(1),
            last_seen=now - minutes(1),
        )
        for n in range(count)
    )
    evaluate_alerts(now=now)


@pytest.mark.parametrize("persona", ["observer", "operator", "owner"])
def test_every_tier_sees_the_rules_and_the_alert_history(
    client: Any, request: Any, persona: str
) -> None:
    make_channel()
    make_alerts(1)
    client.force_login(request.getfixturevalue(persona))

    rules = client.get(RULES)
    history = client.get(ALERTS)
    alert = client.get(f"{ALERTS}{Alert.objects.get().pk}/change/")

    assert rules.status_code == history.status_code == alert.status_code == 200
    assert "New error fingerprint" in rules.content.decode()
    assert "New error: failure 0" in history.content.decode()
    assert "/admin/controlplane/notificationdelivery/" in alert.content.decode()


def test_an_outsider_sees_neither(client: Any, outsider: Any) -> None:
    client.force_login(outsider)

    assert client.get(RULES, follow=True).status_code == 403
    assert client.get(ALERTS, follow=True).status_code == 403


@pytest.mark.parametrize("persona", ["observer", "operator"])
def test_only_owners_change_rules(client: Any, request: Any, persona: str) -> None:
    rule = AlertRule.objects.get(kind=AlertKind.SPIKE)
    client.force_login(request.getfixturevalue(persona))

    assert client.get(f"{RULES}add/").status_code == 403
    client.post(f"{RULES}{rule.pk}/change/", {**RULE_FORM, "name": "theirs"})
    assert client.post(f"{RULES}{rule.pk}/delete/", {"post": "yes"}).status_code == 403

    rule.refresh_from_db()
    assert rule.name == "Error spike"
    html = client.get(f"{RULES}{rule.pk}/change/").content.decode()
    assert 'name="multiplier"' not in html  # shown as text, not a field to change


def test_an_owner_adds_and_changes_a_rule_and_both_are_audited(client: Any, owner: Any) -> None:
    pager = make_channel("pager", "https://hooks.example.invalid/pager")
    client.force_login(owner)

    client.post(f"{RULES}add/", {**RULE_FORM, "channels": [pager.pk]})
    rule = AlertRule.objects.get(name="Checkout 5xx")
    client.post(f"{RULES}{rule.pk}/change/", {**RULE_FORM, "threshold": "0.1", "channels": []})

    rule.refresh_from_db()
    assert (rule.threshold, rule.minutes, list(rule.channels.all())) == (Decimal("0.1"), 3, [])
    events = AuditEvent.objects.filter(object_id=str(rule.pk)).order_by("id")
    assert [(e.action, e.actor) for e in events] == [
        ("alertrule.created", owner),
        ("alertrule.channels_changed", owner),
        ("alertrule.changed", owner),
        ("alertrule.channels_changed", owner),
    ]
    assert events[2].before == {"threshold": "0.0200"}
    assert events[2].after == {"threshold": "0.1000"}
    assert events[3].after == {"channels": []}
    assert "alertrule.changed" in client.get(f"{RULES}{rule.pk}/history/").content.decode()


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("multiplier", "1", "Must be more than 1"),
        ("threshold", "0", "more than 0, at most 1"),
        ("threshold", "1.5", "more than 0, at most 1"),
        ("minutes", "0", "greater than or equal to 1"),
        ("window_minutes", "0", "greater than or equal to 1"),
        ("floor", "-3", "greater than or equal to 0"),
        ("multiplier", "lots", "Enter a number"),
        ("baseline_minutes", "1440", "at most 1440 minutes (HEALTHMON_MINUTE_COUNTS_DAYS)"),
        # A channel id past any key's range (SQLite cannot even look it up).
        ("channels", str(2**70), "is not a valid value"),
    ],
)
def test_bad_parameters_are_refused_with_the_reason(
    client: Any, owner: Any, field: str, value: str, reason: str
) -> None:
    client.force_login(owner)

    response = client.post(f"{RULES}add/", {**RULE_FORM, field: value})

    assert response.status_code == 200
    assert reason in response.content.decode()
    assert not AlertRule.objects.filter(name="Checkout 5xx").exists()


def test_nobody_adds_changes_or_deletes_an_alert(client: Any, owner: Any) -> None:
    make_channel()
    make_alerts(1)
    alert = Alert.objects.get()
    client.force_login(owner)

    assert client.get(f"{ALERTS}add/").status_code == 403
    client.post(f"{ALERTS}{alert.pk}/change/", {"summary": "nothing happened"})
    assert client.post(f"{ALERTS}{alert.pk}/delete/", {"post": "yes"}).status_code == 403

    alert.refresh_from_db()
    assert alert.summary == "New error: failure 0"
    assert len(messages()) == 1


def test_the_alert_history_list_costs_the_same_queries_for_many_alerts(
    client: Any, observer: Any
) -> None:
    make_channel()
    client.force_login(observer)
    make_alerts(2)
    with CaptureQueriesContext(connection) as few:
        client.get(ALERTS)
    Alert.objects.all().delete()
    Fingerprint.objects.all().delete()
    make_alerts(9)
    with CaptureQueriesContext(connection) as many:
        response = client.get(ALERTS)

    assert response.content.decode().count("New error: failure") == 9
    assert len(many) == len(few)


def test_open_episodes_are_counted_on_the_rule_list(client: Any, observer: Any) -> None:
    make_channel()
    make_alerts(3)
    Alert.objects.filter(pk=Alert.objects.order_by("id").first().pk).update(  # type: ignore[union-attr]
        cleared_at=timezone.now() + timedelta(minutes=1)
    )
    client.force_login(observer)

    html = client.get(RULES).content.decode()

    assert '<td class="field-open_episodes">2</td>' in html
