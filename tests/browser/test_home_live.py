"""Home in headless Chromium: its cards follow the system without a reload, as an
approval arrives, a run starts and stops, a task gets stuck, an error fingerprint
appears and a diagnosis turns critical.

What changes is done through the live server (a browser, a worker's or exporter's
HTTP call), as it happens in production: an event published by this test process
would not reach the server's in-memory channel layer.
"""

from __future__ import annotations

import json
import urllib.request
from importlib import import_module
from typing import Any

import pytest
from django.apps import apps as django_apps

from chat.models import ChatSession, Run, RunStatus
from controlplane.models import Approval, FeatureToggle
from healthmon.ingest_keys import issue_key
from healthmon.models import Fingerprint, LogSource
from healthmon.shared_grouper import shared_grouper
from selfheal.engine import create_task
from selfheal.models import Task, TaskStatus, Worker
from tests.browser.test_selfheal_live import open_live, worker_call
from tests.healthmon.otlp_driver import json_request, record
from tests.personas import PASSWORD
from tests.selfheal import expire_lease

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CRITICAL_RED = "rgb(248, 81, 73)"
OTLP_ERROR = 17  # OpenTelemetry's severity number of ERROR


def log_in(page: Any, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/")


def test_an_approval_requested_elsewhere_appears_on_home_without_reloading(
    live_server_url: str, browser: Any, owner: Any, operator: Any
) -> None:
    FeatureToggle.objects.create(key="reports.weekly", enabled=True, description="Weekly report")
    owner_view = browser.new_context()
    operator_view = browser.new_context()
    try:
        home = owner_view.new_page()
        log_in(home, live_server_url, owner.username)
        assert "Nothing waits for a decision" in home.inner_text("#pending-approvals")
        home.wait_for_function("() => window.htmx !== undefined")
        # The websocket is open once htmx's ws extension reports it.
        home.wait_for_function(
            "() => document.querySelector('[ws-connect]')['htmx-internal-data']"
            "?.webSocket?.socket?.readyState === 1"
        )
        navigations = []
        home.on("framenavigated", lambda frame: navigations.append(frame.url))

        other = operator_view.new_page()
        log_in(other, live_server_url, operator.username)
        other.goto(f"{live_server_url}/toggles/")
        other.select_option("#id_key", "reports.weekly")
        other.select_option("#id_enabled", "false")
        other.fill("#id_reason", "Quiet period during the <migration>")
        other.click("text=Request approval")
        other.wait_for_selector("text=an Owner decides")

        row = home.wait_for_selector("#pending-approvals .approval")
        assert "Quiet period during the <migration>" in row.inner_text()
        assert home.inner_text("#pending-count") == "1"
        assert home.is_visible("#pending-approvals button[value=approve]")
        assert navigations == [], "Home reloaded instead of updating live"
    finally:
        owner_view.close()
        operator_view.close()


def test_an_approval_pushed_live_to_home_is_approved_by_clicking_without_a_reload(
    live_server_url: str, browser: Any, owner: Any, operator: Any
) -> None:
    toggle = FeatureToggle.objects.create(
        key="reports.weekly", enabled=True, description="Weekly report"
    )
    owner_view = browser.new_context()
    operator_view = browser.new_context()
    try:
        home = owner_view.new_page()
        log_in(home, live_server_url, owner.username)
        home.wait_for_function(
            "() => document.querySelector('[ws-connect]')?.['htmx-internal-data']"
            "?.webSocket?.socket?.readyState === 1"
        )
        other = operator_view.new_page()
        log_in(other, live_server_url, operator.username)
        other.goto(f"{live_server_url}/toggles/")
        other.select_option("#id_key", "reports.weekly")
        other.select_option("#id_enabled", "false")
        other.fill("#id_reason", "Quiet period")
        other.click("text=Request approval")
        other.wait_for_selector("text=an Owner decides")

        # The row came over /ws/home/, rendered without a request: no token field.
        home.click("#pending-approvals .approval button[value=approve]")

        home.wait_for_url(f"{live_server_url}/approvals/")
        assert "approved" in home.inner_text(".messages")
        [approval] = Approval.objects.all()
        assert approval.status == Approval.Status.APPROVED
        toggle.refresh_from_db()
        assert toggle.enabled is False
    finally:
        owner_view.close()
        operator_view.close()


@pytest.fixture
def seeded_routing(db: Any) -> None:
    """Runs route their model calls through the seeded offline catalog, routes and run
    budgets, which the flush of an earlier transactional test removed."""
    for migration in (
        "routing.migrations.0002_seed_catalog_policies_routes",
        "chat.migrations.0002_run_budgets",
    ):
        import_module(migration).seed(django_apps, None)


def test_home_follows_a_run_from_its_start_to_its_stop_without_reloading(
    live_server_url: str, browser: Any, observer: Any, operator: Any, seeded_routing: None
) -> None:
    chat = ChatSession.objects.create(user=operator, title="Live run")
    watching_view = browser.new_context()
    acting_view = browser.new_context()
    try:
        home = watching_view.new_page()
        log_in(home, live_server_url, observer.username)
        navigations = open_live(home, f"{live_server_url}/")
        assert "No agent is running." in home.inner_text("#home-runs")

        acting = acting_view.new_page()
        log_in(acting, live_server_url, operator.username)
        acting.goto(f"{live_server_url}/chat/{chat.pk}/")
        acting.wait_for_function("() => window.htmx !== undefined")
        acting.fill("#id_message", "Tell me a long story about the <task> queue.")
        acting.click("#run-button")
        acting.wait_for_selector('#run-status[data-status="streaming"]')
        run = Run.objects.get(session=chat)

        # The offline model streams slowly on the live server: Home sees it working.
        row = home.wait_for_selector(f"#home-runs .home-runs-active #home-run-{run.pk}")
        assert row.eval_on_selector("a", "a => a.getAttribute('href')") == f"/chat/{chat.pk}/"
        home.wait_for_function(
            f"() => /Streaming|Thinking|Running a tool/.test("
            f"document.querySelector('#home-run-{run.pk} .run-status')?.textContent)"
        )
        assert home.inner_text("#active-run-count") == "1"

        acting.click("#stop-button")

        stopped = home.wait_for_selector(f"#home-runs .home-runs-stopped #home-run-{run.pk}")
        assert "Stopped by a person" in stopped.inner_text()
        home.wait_for_function(
            "() => document.querySelector('#active-run-count')?.textContent === '0'"
        )
        assert "No agent is running." in home.inner_text("#home-runs")
        run.refresh_from_db()
        assert run.status == RunStatus.STOPPED
        assert navigations == [], "Home reloaded instead of updating live"
    finally:
        watching_view.close()
        acting_view.close()


def test_a_task_whose_worker_went_silent_shows_as_stuck_on_home(
    live_server_url: str, browser: Any, observer: Any
) -> None:
    _, token = Worker.register("builder", ["deploy"])
    _, other_token = Worker.register("spare", ["deploy"])
    task = create_task("Deploy <the> release", "deploy", required_capabilities=["deploy"])
    context = browser.new_context()
    try:
        home = context.new_page()
        log_in(home, live_server_url, observer.username)
        navigations = open_live(home, f"{live_server_url}/")
        assert "No task is stuck or waiting." in home.inner_text("#home-engine")

        assert worker_call(live_server_url, token, "heartbeat", {}) == 200
        assert worker_call(live_server_url, token, "claim", {}) == 200
        home.wait_for_function(
            "() => document.querySelector('#queue-running')?.textContent.trim() === '1 running'"
        )
        assert Task.objects.get(pk=task.pk).status == TaskStatus.RUNNING

        # The builder dies holding the task; the engine's next move (the spare worker
        # coming online) brings Home up to date, as would its half-minute look.
        expire_lease(task)
        assert worker_call(live_server_url, other_token, "heartbeat", {}) == 200

        stuck = home.wait_for_selector(f"#home-engine #home-task-{task.pk}")
        assert "stuck: lease expired" in stuck.inner_text()
        assert "Deploy <the> release" in stuck.inner_text()
        assert home.inner_text("#attention-count") == "1"
        assert "2 of 2 workers online" in home.inner_text("#workers-online")
        assert navigations == [], "Home reloaded instead of updating live"
    finally:
        context.close()


def test_an_error_sent_by_a_service_appears_on_home_as_a_new_fingerprint(
    live_server_url: str, browser: Any, observer: Any
) -> None:
    source = LogSource.objects.create(name="shop", service="shop", kind=LogSource.Kind.OTLP)
    _, key = issue_key(source, "shop pods")
    context = browser.new_context()
    try:
        home = context.new_page()
        log_in(home, live_server_url, observer.username)
        navigations = open_live(home, f"{live_server_url}/")
        assert "No open error fingerprints." in home.inner_text("#home-errors")

        body = json_request(
            [record("Inventory service returned <503> for sku A-77", severity=OTLP_ERROR)],
            service="shop",
        )
        request = urllib.request.Request(
            f"{live_server_url}/v1/logs",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=120) as response:  # a hang guard
            assert response.status == 200

        fingerprint = Fingerprint.objects.get(service="shop")
        row = home.wait_for_selector(f"#home-errors #home-fingerprint-{fingerprint.pk}")
        assert "Inventory service returned" in row.inner_text()
        assert home.inner_text("#open-errors") == "1"
        assert navigations == [], "Home reloaded instead of updating live"
    finally:
        context.close()
        shared_grouper.forget()


def test_system_health_turns_critical_live_when_a_diagnosis_finds_a_critical_problem(
    live_server_url: str, browser: Any, observer: Any, operator: Any
) -> None:
    # Work is pending and no worker is alive: the diagnosis says critical.
    create_task("Nobody can take me", "deploy", required_capabilities=["deploy"])
    watching_view = browser.new_context()
    acting_view = browser.new_context()
    try:
        home = watching_view.new_page()
        log_in(home, live_server_url, observer.username)
        navigations = open_live(home, f"{live_server_url}/")
        assert home.inner_text("#system-health-severity").lower() == "ok"

        acting = acting_view.new_page()
        log_in(acting, live_server_url, operator.username)
        acting.goto(f"{live_server_url}/selfheal/")
        acting.click("#diagnose-button")

        home.wait_for_selector("#system-health.state-critical")
        badge = home.locator("#system-health-severity")
        assert badge.inner_text().lower() == "critical"
        assert badge.evaluate("el => getComputedStyle(el).color") == CRITICAL_RED
        assert "Needs attention now." in home.inner_text("#system-health")
        assert "critical" in home.inner_text("#home-diagnosis").lower()
        assert navigations == [], "Home reloaded instead of updating live"
    finally:
        watching_view.close()
        acting_view.close()
