"""The task queue and the workers on /metrics, read at scrape time."""

from __future__ import annotations

import pytest
from django.utils import timezone

from selfheal import engine
from tests.metrics_scrape import scrape
from tests.selfheal import make_task, make_worker

pytestmark = pytest.mark.django_db


def test_tasks_are_counted_by_status() -> None:
    worker, _ = make_worker(capabilities=["noop"])
    make_task("first")
    make_task("second")
    make_task("third")
    assert engine.claim(worker) is not None

    metrics = scrape()

    assert metrics.value("selfheal_tasks", status="pending") == 2
    assert metrics.value("selfheal_tasks", status="running") == 1
    assert metrics.value("selfheal_tasks", status="failed") == 0  # every status is written


def test_workers_are_counted_online_and_offline_and_revoked_ones_left_out() -> None:
    make_worker("alpha")
    make_worker("beta")
    gone, _ = make_worker("gamma")
    engine.go_offline(gone, "no heartbeat")
    revoked, _ = make_worker("delta")
    # As the admin's revoke action does: offline too, yet no longer part of the fleet.
    revoked.revoked_at = timezone.now()
    revoked.save()
    engine.go_offline(revoked, "its token was revoked")

    metrics = scrape()

    assert metrics.value("selfheal_workers", status="online") == 2
    assert metrics.value("selfheal_workers", status="offline") == 1
    assert metrics.value("selfheal_workers", status="draining") == 0
