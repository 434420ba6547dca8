"""The Self-heal and Engine pages in headless Chromium: the queue updates live as
tasks arrive and a worker claims them, and Diagnose shows a colour-coded report,
live on another person's open page too.

Tasks are created in the database by this test. The event their creation
publishes does not reach the live server from here (the in-memory channel layer
lives in this process, and Playwright's event loop on this thread keeps
`async_to_sync` from sending to Redis: a logged, best-effort miss). So a worker
then talks to the live server over HTTP, as a real one does; the server publishes,
and the page re-renders its counts from the database, which has both tasks.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from selfheal.engine import create_task, transition
from selfheal.models import PlaybookExecution, Task, Worker
from selfheal.playbooks import run_playbook
from tests.personas import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SOCKET_OPEN = (
    "() => document.querySelector('[ws-connect]')?.['htmx-internal-data']"
    "?.webSocket?.socket?.readyState === 1"
)
CRITICAL_RED = "rgb(248, 81, 73)"


def log_in(page: Any, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/")


def open_live(page: Any, url: str) -> list[str]:
    """Open `url`, wait for its socket, and return the list of later navigations."""
    page.goto(url)
    page.wait_for_function("() => window.htmx !== undefined")
    page.wait_for_function(SOCKET_OPEN)
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    return navigations


def answer(questions: list[str], *, accept: bool) -> Callable[[Any], None]:
    """A handler for a page's next dialog: notes its question, then accepts or dismisses."""

    def handle(dialog: Any) -> None:
        questions.append(dialog.message)
        if accept:
            dialog.accept()
        else:
            dialog.dismiss()

    return handle


def worker_call(base_url: str, token: str, endpoint: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        f"{base_url}/selfheal/api/{endpoint}",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=120) as response:  # a hang guard
        return response.status


def wait_for_count(page: Any, status: str, count: int) -> None:
    page.wait_for_function(
        f"() => document.querySelector('#queue-count-{status}')?.textContent.trim() === '{count}'",
    )


def test_the_engine_page_counts_new_and_claimed_tasks_without_reloading(
    live_server_url: str, browser: Any, observer: Any
) -> None:
    _, token = Worker.register("builder", ["deploy"])
    context = browser.new_context()
    try:
        page = context.new_page()
        log_in(page, live_server_url, observer.username)
        navigations = open_live(page, f"{live_server_url}/selfheal/engine/")
        assert page.inner_text("#queue-count-pending") == "0"
        assert "builder" in page.inner_text("#engine-workers")

        create_task("Deploy <the> release", "deploy", required_capabilities=["deploy"])
        create_task("Deploy the docs", "deploy", required_capabilities=["deploy"])
        assert worker_call(live_server_url, token, "heartbeat", {"version": "1.2"}) == 200

        wait_for_count(page, "pending", 2)
        page.wait_for_function(
            "() => document.querySelector('#engine-workers .worker-online') !== null",
        )

        # The task list re-renders too, each task saying what it waits for.
        page.wait_for_function("() => document.querySelectorAll('#task-list-rows tr').length === 2")
        assert "an external worker that executes deploy" in page.inner_text("#engine-tasks")

        assert worker_call(live_server_url, token, "claim", {}) == 200
        wait_for_count(page, "pending", 1)
        wait_for_count(page, "running", 1)
        page.wait_for_selector("#engine-tasks .waiting-for:has-text('builder to finish it')")
        assert navigations == [], "the Engine page reloaded instead of updating live"
    finally:
        context.close()


def test_diagnose_shows_a_colour_coded_report_here_and_live_on_an_open_page(
    live_server_url: str, browser: Any, operator: Any, observer: Any
) -> None:
    # Work is pending and no worker is alive: a critical finding only a person can fix.
    create_task("Nobody can take me", "deploy", required_capabilities=["deploy"])
    operator_view = browser.new_context()
    observer_view = browser.new_context()
    try:
        watching = observer_view.new_page()
        log_in(watching, live_server_url, observer.username)
        navigations = open_live(watching, f"{live_server_url}/selfheal/")
        assert "No diagnosis yet" in watching.inner_text("#selfheal-report")
        assert not watching.is_visible("#diagnose-button")  # an Observer only sees

        acting = operator_view.new_page()
        log_in(acting, live_server_url, operator.username)
        acting.goto(f"{live_server_url}/selfheal/")
        acting.click("#diagnose-button")
        acting.wait_for_selector("#selfheal-report.sev-critical")

        badge = acting.locator("#report-severity")
        assert badge.inner_text().lower() == "critical"
        assert badge.evaluate("el => getComputedStyle(el).color") == CRITICAL_RED
        assert acting.is_visible("#manual-actions")
        assert "Start a worker" in acting.inner_text("#manual-actions")
        assert acting.locator("#finding-database.sev-ok").count() == 1

        watching.wait_for_selector("#selfheal-report.sev-critical")
        assert watching.locator("#history-rows tr").count() == 1
        assert navigations == [], "the Self-heal page reloaded instead of updating live"
    finally:
        operator_view.close()
        observer_view.close()


def test_repair_asks_first_and_then_shows_the_state_it_left(
    live_server_url: str, browser: Any, operator: Any
) -> None:
    # A blocked to-do: the queue check warns; repair puts it back, and a person's to-do
    # needs no worker, so the queue is fine afterwards.
    blocked = transition(create_task("Look into it", "chat.request"), "blocked", reason="no disk")
    context = browser.new_context()
    try:
        page = context.new_page()
        log_in(page, live_server_url, operator.username)
        page.goto(f"{live_server_url}/selfheal/")
        page.wait_for_function("() => window.htmx !== undefined")
        repairs: list[str] = []
        page.on(
            "request",
            lambda request: (
                repairs.append(request.method)
                if request.url.endswith("/selfheal/repair/")
                else None
            ),
        )
        page.uncheck("#repair-dry-run")

        questions: list[str] = []
        page.once("dialog", answer(questions, accept=False))
        page.click("#repair-button")  # returns once its dialog is answered
        assert len(questions) == 1
        assert questions[0].startswith("Run the repair playbook?")

        page.once("dialog", answer(questions, accept=True))
        page.click("#repair-button")
        page.wait_for_selector("#finding-task_queue.sev-ok")

        # Only the accepted question sent a repair: the dismissed one sent nothing.
        assert repairs.count("POST") == 1
        assert PlaybookExecution.objects.filter(playbook="repair").count() == 1
        assert Task.objects.get(pk=blocked.pk).status == "pending"
        queue = page.inner_text("#finding-task_queue")
        assert "resolved: was warning" in queue
        assert "nothing blocked or stuck" in queue
        assert page.is_visible("#after-repair-heading")
        # What it found before is kept, folded: not beside the state it left.
        assert not page.is_visible("#before-repair ul")
    finally:
        context.close()


def test_rollback_asks_first_then_undoes_the_repair(
    live_server_url: str, browser: Any, operator: Any
) -> None:
    blocked = transition(create_task("Look into it", "chat.request"), "blocked", reason="no disk")
    execution = run_playbook("repair", user=operator)
    assert Task.objects.get(pk=blocked.pk).status == "pending"
    context = browser.new_context()
    try:
        page = context.new_page()
        log_in(page, live_server_url, operator.username)
        page.goto(f"{live_server_url}/selfheal/")
        page.wait_for_function("() => window.htmx !== undefined")
        questions: list[str] = []
        button = f"#execution-{execution.pk} .rollback-button"
        page.once("dialog", answer(questions, accept=False))
        page.click(button)  # returns once its dialog is answered
        assert questions == [
            f"Roll back execution #{execution.pk}? Every row it changed goes back to its "
            "snapshot (refused if any changed since)."
        ]
        assert PlaybookExecution.objects.get(pk=execution.pk).status != "rolled_back"

        page.once("dialog", answer(questions, accept=True))
        page.click(button)
        page.wait_for_function(
            f"() => document.querySelector('#execution-{execution.pk} .exec-status')"
            "?.textContent.includes('Rolled back')"
        )
        assert PlaybookExecution.objects.get(pk=execution.pk).status == "rolled_back"
        assert Task.objects.get(pk=blocked.pk).status == "blocked"
        assert f"Execution #{execution.pk} rolled back." in page.inner_text("body")
    finally:
        context.close()
