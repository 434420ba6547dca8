"""Two evaluations at the same moment (two beat ticks, a worker and a retry): each
episode opens once and is told once."""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal

import pytest
from django.db import connections

from healthmon.alerts.evaluation import evaluate_alerts
from healthmon.levels import Level
from healthmon.models import Alert, AlertKind, AlertRule, Fingerprint, ServiceMinute
from tests.healthmon.alerting import make_channel, messages, minutes, this_minute

pytestmark = pytest.mark.django_db(transaction=True)


def at_once(work: Callable[[], object], runs: int = 2) -> list[BaseException]:
    start = threading.Barrier(runs)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait()
            work()
        except BaseException as exc:  # reported to the test, which asserts there is none
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(runs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_concurrent_evaluations_open_and_tell_each_episode_once() -> None:
    make_channel()
    AlertRule.objects.all().delete()
    AlertRule.objects.create(name="new", kind=AlertKind.NEW_FINGERPRINT)
    AlertRule.objects.create(
        name="5xx", kind=AlertKind.SUSTAINED_5XX, threshold=Decimal("0.5"), minutes=2
    )
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
        for n in range(30)
    )
    ServiceMinute.objects.bulk_create(
        ServiceMinute(service="api", minute=now - minutes(m), http_requests=40, http_5xx=30)
        for m in (1, 2)
    )

    assert at_once(lambda: evaluate_alerts(now=now)) == []

    alerts = list(Alert.objects.all())
    assert len(alerts) == 31
    assert all(alert.is_open for alert in alerts)
    told = {alert.opened_notice for alert in alerts}
    # Every episode was told by exactly one message, and no message was sent twice.
    assert sorted(m.dedupe_key for m in messages()) == sorted(told)
