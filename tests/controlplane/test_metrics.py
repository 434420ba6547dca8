"""GET /metrics: who may read it, what it costs the database, the counters kept in
the core (failed live updates, log records), and the multiprocess mode of scale mode.
The apps' own metrics are tested beside them (tests/<app>/test_metrics.py)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from celery.signals import worker_process_shutdown
from django.conf import settings
from django.db import connection
from django.test import Client, override_settings

from controlplane.runtime import publisher as publisher_module
from controlplane.runtime.publisher import publisher
from healthmon.metrics import count_log_records
from routing.models import Budget
from routing.reservations import reserve
from tests.chat.runs import make_run
from tests.metrics_scrape import METRICS_URL, Scrape, scrape
from tests.selfheal import make_task, make_worker

pytestmark = pytest.mark.django_db

TOKEN = "s3cret-scraper-token"
OUTSIDE = "203.0.113.9"  # TEST-NET-3: a public address


def refused_without_data(response: Any, status: int) -> None:
    assert response.status_code == status
    assert b"# HELP" not in response.content
    assert b"routing_" not in response.content


# -- who may read it ----------------------------------------------------------------


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "10.4.0.7", "192.168.1.20", "172.20.0.3"])
def test_an_internal_address_reads_the_metrics_without_a_token(address: str) -> None:
    response = Client(REMOTE_ADDR=address).get(METRICS_URL)

    assert response.status_code == 200
    assert b"# TYPE selfheal_workers gauge" in response.content


@pytest.mark.parametrize("address", [OUTSIDE, "::ffff:203.0.113.9", "2001:db8::1", ""])
def test_an_outside_address_gets_403_and_no_data(address: str) -> None:
    refused_without_data(Client(REMOTE_ADDR=address).get(METRICS_URL), 403)


def test_a_mapped_ipv6_form_of_an_internal_address_is_internal() -> None:
    assert Client(REMOTE_ADDR="::ffff:10.0.0.5").get(METRICS_URL).status_code == 200


@pytest.mark.parametrize("header", ["X-Forwarded-For", "X-Real-IP", "Forwarded"])
def test_a_request_that_came_through_a_proxy_is_not_internal(header: str) -> None:
    # The load balancer's own address is private; the request it forwards is not.
    client = Client(REMOTE_ADDR="10.0.0.2")

    response = client.get(METRICS_URL, headers={header: OUTSIDE})

    refused_without_data(response, 403)


@override_settings(METRICS_ALLOWED_NETWORKS=["203.0.113.0/24"])
def test_the_allowed_networks_are_a_setting() -> None:
    assert Client(REMOTE_ADDR=OUTSIDE).get(METRICS_URL).status_code == 200
    assert Client(REMOTE_ADDR="127.0.0.1").get(METRICS_URL).status_code == 403


@override_settings(METRICS_TOKEN=TOKEN)
@pytest.mark.parametrize(
    "authorization",
    ["", "Bearer", "Bearer wrong-token", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN}x"],
)
def test_with_a_token_set_a_missing_or_wrong_token_gets_401_even_from_inside(
    authorization: str,
) -> None:
    headers = {"Authorization": authorization} if authorization else {}

    response = Client(REMOTE_ADDR="127.0.0.1").get(METRICS_URL, headers=headers)

    refused_without_data(response, 401)
    assert response["WWW-Authenticate"].startswith("Bearer")


@override_settings(METRICS_TOKEN=TOKEN)
def test_with_a_token_set_the_right_token_reads_the_metrics_from_anywhere() -> None:
    client = Client(REMOTE_ADDR=OUTSIDE)

    metrics = scrape(client, headers={"Authorization": f"Bearer {TOKEN}"})

    assert metrics.matching("selfheal_workers", status="online") == [0.0]


def test_the_token_may_be_configured_as_its_sha256_digest() -> None:
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    client = Client(REMOTE_ADDR=OUTSIDE)
    with override_settings(METRICS_TOKEN=f"sha256:{digest}"):
        assert (
            client.get(METRICS_URL, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        )
        refused_without_data(
            client.get(METRICS_URL, headers={"Authorization": f"Bearer {digest}"}), 401
        )


def test_only_get_and_head_are_answered() -> None:
    assert Client().post(METRICS_URL).status_code == 405
    assert Client().head(METRICS_URL).status_code == 200


# -- what a scrape costs the database ------------------------------------------------


def test_a_scrape_reads_the_database_in_six_queries_however_much_there_is(
    operator: Any, django_assert_num_queries: Any
) -> None:
    def add_one_of_each(n: int) -> None:
        budget = Budget.objects.create(
            scope=Budget.Scope.OPERATION, operation=f"op-{n}", daily_limit=Decimal(5)
        )
        reserve(f"call-{n}", Decimal("0.25"), [budget], enforced=True)
        make_run(operator)
        make_task(f"task {n}")
        make_worker(f"worker-{n}")

    add_one_of_each(1)
    Budget.objects.create(scope=Budget.Scope.USER, user=operator, daily_limit=Decimal(1))
    # Budgets and their ledgers (2), reservations held (1), runs (1), tasks and workers (2).
    with django_assert_num_queries(6):
        scrape()

    for n in range(2, 6):
        add_one_of_each(n)
    with django_assert_num_queries(6):
        metrics = scrape()
    assert len(metrics.matching("routing_budget_limit_usd")) == 6
    assert metrics.value("routing_reservations_held") == 5


# -- counters kept in the core ---------------------------------------------------------


class FailingLayer:
    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        raise ConnectionError("the channel layer is unreachable")


class SignallingLayer:
    def __init__(self) -> None:
        self.sent = threading.Event()

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        self.sent.set()


def test_a_live_update_the_layer_refuses_counts_as_a_publish_failure() -> None:
    after_it = SignallingLayer()
    before = scrape().value("controlplane_live_publish_failures_total", reason="failed")

    publisher.submit(FailingLayer(), "home", {"type": "approval.changed"})
    # Sends go one at a time, in order: once the next one is sent the failure is counted.
    publisher.submit(after_it, "home", {"type": "approval.changed"})
    assert after_it.sent.wait(timeout=60)

    after = scrape().value("controlplane_live_publish_failures_total", reason="failed")
    assert after == before + 1


def test_a_live_update_dropped_for_a_backlog_counts_as_a_publish_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = scrape().value("controlplane_live_publish_failures_total", reason="dropped")

    monkeypatch.setattr(publisher_module, "MAX_PENDING", 0)  # any send is one too many
    publisher.submit(SignallingLayer(), "home", {"type": "approval.changed"})

    after = scrape().value("controlplane_live_publish_failures_total", reason="dropped")
    assert after == before + 1


def test_log_records_ingested_and_rejected_are_counted_by_source() -> None:
    before = scrape()

    count_log_records("otlp", ingested=40, rejected=2)
    count_log_records("otlp", ingested=10)

    after = scrape()
    for name, added in (
        ("healthmon_log_records_ingested_total", 50),
        ("healthmon_log_records_rejected_total", 2),
    ):
        assert after.value(name, source="otlp") == before.value(name, source="otlp") + added


# -- several processes (scale mode) ----------------------------------------------------


def run_process(directory: Path, *jobs: str) -> str:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "CONTROLPLANE_LIVE_TEST_DB": str(connection.settings_dict["NAME"]),
        "CONTROLPLANE_LIVE_TEST_CACHE": str(settings.CACHES["default"].get("LOCATION", "")),
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.controlplane.metrics_processes", *jobs],
        env=env,
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.django_db(transaction=True)
def test_several_processes_add_up_and_the_database_figures_appear_once(tmp_path: Path) -> None:
    make_worker("alpha")

    # One process counts a failed live update and exits; another counts one and
    # answers the scrape.
    run_process(tmp_path, "count")
    metrics = Scrape(run_process(tmp_path, "count", "scrape"))

    assert metrics.value("controlplane_live_publish_failures_total", reason="failed") == 2
    assert metrics.matching("selfheal_workers", status="online") == [1.0]
    assert len(list(tmp_path.glob("counter_*.db"))) == 2  # one file per process


@pytest.mark.parametrize("signal", ["celery", "exit"])
def test_a_process_that_ends_leaves_the_live_gauges_but_keeps_its_counters(
    tmp_path: Path, signal: str
) -> None:
    live, counted = tmp_path / "gauge_livesum_4242.db", tmp_path / "counter_4242.db"
    live.touch()
    counted.touch()

    with override_settings(PROMETHEUS_MULTIPROC_DIR=str(tmp_path)):
        if signal == "celery":  # a prefork child of a Celery worker
            worker_process_shutdown.send(sender=None, pid=4242, exitcode=0)
        else:
            from controlplane.metrics import forget_dead_process

            forget_dead_process(4242)

    assert not live.exists()
    assert counted.exists()
