"""Alerts on new fingerprints and regressions: told once per episode, cleared once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from healthmon.alerts.evaluation import evaluate_alerts
from healthmon.levels import Level
from healthmon.models import Alert, AlertKind, AlertRule, Fingerprint
from tests.healthmon.alerting import (
    log,
    make_channel,
    make_source,
    messages,
    minutes,
    only_rule,
    subjects,
    this_minute,
)
from tests.local_servers import LocalWebhook

pytestmark = pytest.mark.django_db


def test_the_default_rules_watch_all_four_kinds() -> None:
    kinds = set(AlertRule.objects.filter(enabled=True).values_list("kind", flat=True))

    assert kinds == {kind.value for kind in AlertKind}


def test_a_new_error_fingerprint_is_told_once_and_cleared_once_when_quiet() -> None:
    make_channel()
    only_rule(AlertKind.NEW_FINGERPRINT, quiet_minutes=30)
    source = make_source()
    start = this_minute() - minutes(120)
    log(source, "payment gateway timed out after 30s", at=start)
    fingerprint = Fingerprint.objects.get()

    evaluate_alerts(now=start + minutes(1))
    evaluate_alerts(now=start + minutes(2))
    log(source, "payment gateway timed out after 31s", at=start + minutes(10))
    evaluate_alerts(now=start + minutes(20))

    [opened] = messages()
    assert opened.subject.startswith("[api] New error: payment gateway timed out")
    assert f"/health/fingerprints/{fingerprint.pk}/" in opened.body
    alert = Alert.objects.get()
    assert alert.is_open
    assert alert.fingerprint == fingerprint
    assert list(alert.deliveries()) == [opened]

    evaluate_alerts(now=start + minutes(41))  # 31 min after it was last seen
    evaluate_alerts(now=start + minutes(42))

    assert len(messages()) == 2
    cleared = messages()[1]
    assert cleared.subject.startswith("[api] Cleared: New error: payment gateway")
    assert "not seen for 30 min" in cleared.body
    alert.refresh_from_db()
    assert alert.cleared_at == start + minutes(41)
    assert set(alert.deliveries()) == {opened, cleared}


def test_a_new_fingerprint_seen_again_after_it_cleared_is_not_new() -> None:
    make_channel()
    only_rule(AlertKind.NEW_FINGERPRINT, quiet_minutes=30)
    source = make_source()
    start = this_minute() - minutes(120)
    log(source, "disk quota exceeded on /var/data", at=start)
    evaluate_alerts(now=start + minutes(1))
    evaluate_alerts(now=start + minutes(40))

    log(source, "disk quota exceeded on /var/data", at=start + minutes(45))
    evaluate_alerts(now=start + minutes(46))

    assert len(messages()) == 2
    assert Alert.objects.count() == 1


def test_resolving_or_ignoring_clears_a_new_fingerprint_alert() -> None:
    make_channel()
    only_rule(AlertKind.NEW_FINGERPRINT)
    source = make_source()
    now = this_minute()
    log(source, "cache node redis-3 unreachable", at=now - minutes(2))
    log(source, "worker pool exhausted, 0 of 16 free", at=now - minutes(2))
    evaluate_alerts(now=now)
    first, second = Fingerprint.objects.order_by("id")

    Fingerprint.objects.filter(pk=first.pk).update(status=Fingerprint.Status.RESOLVED)
    Fingerprint.objects.filter(pk=second.pk).update(status=Fingerprint.Status.IGNORED)
    evaluate_alerts(now=now + minutes(1))

    cleared = {a.fingerprint_id: a.cleared_reason for a in Alert.objects.all()}
    assert cleared == {first.pk: "it is resolved", second.pk: "it is ignored"}
    assert len(messages()) == 4


def test_info_lines_and_other_services_do_not_alert_an_error_rule_on_one_service() -> None:
    make_channel()
    only_rule(AlertKind.NEW_FINGERPRINT, service="api", min_level=Level.ERROR)
    now = this_minute()
    log(make_source("api"), "user 7 signed in", at=now - minutes(1), level=Level.INFO)
    log(make_source("billing"), "invoice run failed", at=now - minutes(1))

    evaluate_alerts(now=now)

    assert messages() == []
    assert not Alert.objects.exists()


def test_a_regression_is_told_once_and_cleared_when_resolved_again() -> None:
    make_channel()
    only_rule(AlertKind.REGRESSION)
    source = make_source()
    log(source, "TLS handshake failed with upstream billing")
    fingerprint = Fingerprint.objects.get()
    Fingerprint.objects.filter(pk=fingerprint.pk).update(status=Fingerprint.Status.RESOLVED)
    now = this_minute()
    evaluate_alerts(now=now + minutes(1))
    assert messages() == []  # resolved and quiet: nothing to say

    log(source, "TLS handshake failed with upstream billing")
    evaluate_alerts(now=now + minutes(2))
    evaluate_alerts(now=now + minutes(3))

    assert subjects() == ["[api] Regression error: TLS handshake failed with upstream billing"]

    Fingerprint.objects.filter(pk=fingerprint.pk).update(status=Fingerprint.Status.RESOLVED)
    evaluate_alerts(now=now + minutes(4))
    evaluate_alerts(now=now + minutes(5))

    assert len(messages()) == 2
    assert messages()[1].subject.startswith("[api] Cleared: Regression")
    assert "it is resolved" in messages()[1].body


def test_a_second_regression_is_a_second_episode() -> None:
    make_channel()
    only_rule(AlertKind.REGRESSION, quiet_minutes=10)
    source = make_source()
    log(source, "lock wait timeout exceeded on table orders")
    fingerprint = Fingerprint.objects.get()
    now = this_minute()
    for episode in range(2):
        Fingerprint.objects.filter(pk=fingerprint.pk).update(status=Fingerprint.Status.RESOLVED)
        log(source, "lock wait timeout exceeded on table orders")
        evaluate_alerts(now=now + minutes(1))
        # Quiet for the window: cleared, while it is still regressed; not told again.
        evaluate_alerts(now=now + minutes(12))
        evaluate_alerts(now=now + minutes(13))
        assert len(messages()) == 2 * (episode + 1)

    assert Alert.objects.filter(cleared_at__isnull=False).count() == 2


def test_disabling_a_rule_clears_its_open_episodes_once() -> None:
    make_channel()
    rule = only_rule(AlertKind.NEW_FINGERPRINT)
    now = this_minute()
    log(make_source(), "segfault in image resizer", at=now - minutes(1))
    evaluate_alerts(now=now)

    rule.enabled = False
    rule.save()
    evaluate_alerts(now=now + minutes(1))
    evaluate_alerts(now=now + minutes(2))

    assert len(messages()) == 2
    assert Alert.objects.get().cleared_reason == "the rule was disabled"


def test_a_rule_sends_only_to_its_chosen_enabled_channels() -> None:
    chosen = make_channel("chosen", "https://hooks.example.invalid/a")
    make_channel("other", "https://hooks.example.invalid/b")
    muted = make_channel("muted", "https://hooks.example.invalid/c")
    muted.enabled = False
    muted.save()
    rule = only_rule(AlertKind.NEW_FINGERPRINT)
    rule.channels.set([chosen, muted])
    now = this_minute()
    log(make_source(), "queue consumer crashed", at=now - minutes(1))

    evaluate_alerts(now=now)

    assert [delivery.channel for delivery in messages()] == [chosen]


def test_without_chosen_channels_every_enabled_channel_is_told() -> None:
    make_channel("one", "https://hooks.example.invalid/1")
    make_channel("two", "https://hooks.example.invalid/2")
    only_rule(AlertKind.NEW_FINGERPRINT)
    now = this_minute()
    log(make_source(), "queue consumer crashed", at=now - minutes(1))

    evaluate_alerts(now=now)

    assert sorted(delivery.channel.name for delivery in messages()) == ["one", "two"]


def test_one_open_episode_per_rule_and_subject_is_all_the_database_accepts() -> None:
    rule = only_rule(AlertKind.SUSTAINED_5XX)
    now = timezone.now()
    fields = {"rule": rule, "kind": rule.kind, "service": "api", "since": now, "opened_at": now}
    Alert.objects.create(**fields, summary="first")

    with pytest.raises(IntegrityError), transaction.atomic():
        Alert.objects.create(**fields, summary="second")

    Alert.objects.update(cleared_at=now)
    Alert.objects.create(**fields, summary="the next episode")  # once the first cleared
    assert Alert.objects.count() == 2


@pytest.fixture
def webhook() -> Iterator[LocalWebhook]:
    with LocalWebhook() as server:
        yield server


def test_the_message_reaches_a_webhook_with_a_link_to_the_fingerprint(
    webhook: LocalWebhook, django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    settings.SITE_URL = "https://ops.example.com"
    make_channel("hook", webhook.url)
    only_rule(AlertKind.NEW_FINGERPRINT)
    now = this_minute()
    log(make_source(), "out of memory: killed process 4242 (gunicorn)", at=now - minutes(1))
    fingerprint = Fingerprint.objects.get()

    with django_capture_on_commit_callbacks(execute=True):
        evaluate_alerts(now=now)

    [received] = [request["json"] for request in webhook.received]
    assert received["subject"].startswith("[api] New error: out of memory")
    assert f"https://ops.example.com/health/fingerprints/{fingerprint.pk}/" in received["body"]
    assert [delivery.status for delivery in messages()] == ["sent"]


def test_the_health_page_hears_which_fingerprints_alerts_moved(
    published: list[tuple[str, dict[str, Any]]], django_capture_on_commit_callbacks: Any
) -> None:
    only_rule(AlertKind.NEW_FINGERPRINT)
    now = this_minute()
    log(make_source(), "kafka consumer lag over limit", at=now - minutes(1))
    fingerprint = Fingerprint.objects.get()
    published.clear()

    with django_capture_on_commit_callbacks(execute=True):
        evaluate_alerts(now=now)

    assert published == [
        ("health", {"type": "health.fingerprints", "ids": [fingerprint.pk], "new": []})
    ]


def test_a_rule_turned_into_another_kind_clears_its_episodes_of_the_old_one() -> None:
    make_channel()
    rule = only_rule(AlertKind.NEW_FINGERPRINT)
    now = this_minute()
    log(make_source(), "payment webhook signature invalid", at=now - minutes(1))
    evaluate_alerts(now=now)

    rule.kind = AlertKind.SUSTAINED_5XX
    rule.save()
    evaluate_alerts(now=now + minutes(1))

    assert Alert.objects.get().cleared_reason == "the rule now watches something else"
    assert len(messages()) == 2
