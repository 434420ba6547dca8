"""A chat run watched live in headless Chromium: status, timeline and meters update
without a reload, Stop stops it mid-stream, and the why-idle panel says why.

The live server runs background work on its in-process pool and its offline model
streams a piece every OFFLINE_TOKEN_DELAY_SECONDS (tests/settings.py), so the run is
still streaming when Stop is pressed.
"""

from __future__ import annotations

import re
import time
from importlib import import_module
from typing import Any

import pytest
from django.apps import apps as django_apps

from chat.models import ChatSession, Run, RunStatus, StopReason
from chat.run_status import move_run
from chat.runs import open_run
from tests.personas import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _seeded_routing(db: Any) -> None:
    """The runs route their model calls through the seeded offline catalog, routes
    and run budgets, which the flush of an earlier transactional test removed. (A
    serialized rollback cannot put them back here: Playwright's event loop gives
    this test other database connections than the ones the setup serialized.)"""
    for migration in (
        "routing.migrations.0002_seed_catalog_policies_routes",
        "chat.migrations.0002_run_budgets",
    ):
        import_module(migration).seed(django_apps, None)


SOCKET_OPEN = (
    "() => document.querySelector('#run-panel[ws-connect]')?.['htmx-internal-data']"
    "?.webSocket?.socket?.readyState === 1"
)


def log_in(page: Any, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/")


def test_a_run_streams_live_and_stops_when_stop_is_pressed(
    live_server_url: str, browser: Any, operator: Any
) -> None:
    chat = ChatSession.objects.create(user=operator, title="Live run", mode="code")
    context = browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    try:
        page = context.new_page()
        sockets: list[str] = []
        page.on("websocket", lambda socket: sockets.append(socket.url))
        log_in(page, live_server_url, operator.username)
        page.goto(f"{live_server_url}/chat/{chat.pk}/")
        assert "Nothing has run in this session yet" in page.inner_text("#why-idle")
        assert page.input_value("#id_mode") == "code"  # remembered
        page.wait_for_function("() => window.htmx !== undefined")
        page.evaluate("window.sameDocument = true")  # a reload would forget it

        page.select_option("#id_mode", "normal")
        page.fill("#id_message", "Show the queue_summary of the task engine, please.")
        page.click("#run-button")

        # The new run's panel is swapped in and its socket opens.
        page.wait_for_selector("#run-panel[ws-connect]")
        page.wait_for_function(SOCKET_OPEN)
        # chat.js clears the message the run took (no inline handler under the CSP).
        page.wait_for_function("() => document.querySelector('#id_message').value === ''")
        run = Run.objects.get(session=chat)
        assert run.mode == "normal"

        # The tool call appears in the timeline, then its result.
        row = page.wait_for_selector("#timeline .tool-row")
        assert "queue_summary" in row.inner_text()
        page.wait_for_selector("#timeline .tool-outcome.outcome-ok")
        # The model streams its answer: status, reply and meters move on their own.
        page.wait_for_selector('#run-status[data-status="streaming"]')
        page.wait_for_function("() => document.querySelector('#run-reply').textContent.length > 0")
        steps = page.inner_text("#budget-steps .meter-value")
        assert re.match(r"[12] of \d+", steps), steps
        assert page.is_visible("#stop-button")
        assert not page.is_visible("#why-idle")  # active: nothing to explain

        page.click("#stop-button")

        page.wait_for_selector('#run-status[data-status="stopped"]')
        why = page.wait_for_selector("#why-idle", state="visible")
        text = why.inner_text()
        assert "Stopped by a person" in text
        assert f"{operator.username} stopped the run" in text
        assert page.is_visible("#task-queue")
        assert page.is_visible("#next-action button")  # one click: run it again
        assert not page.is_visible("#stop-button")
        run.refresh_from_db()
        assert (run.status, run.stop_reason) == (RunStatus.STOPPED, StopReason.STOPPED_BY_USER)
        assert run.finished_at is not None
        assert page.evaluate("window.sameDocument === true"), "the page reloaded"

        # The page has every event: its marker is the run's last seq.
        last_seq = run.events.order_by("-seq").values_list("seq", flat=True).first()
        page.wait_for_function(
            f"() => document.getElementById('run-last-seq').dataset.seq === '{last_seq}'"
        )

        # Arguments and result open as pretty JSON, and copy.
        page.click("#timeline .tool-result details summary")
        result = page.inner_text("#timeline .tool-result pre")
        assert '"pending": 0' in result
        page.click("#timeline .tool-result button.copy")
        assert page.evaluate("navigator.clipboard.readText()") == result

        # A reconnect asks only for what the page lacks, and nothing is repeated.
        reply = page.inner_text("#run-reply")
        page.evaluate("document.querySelector('#run-panel')['htmx-internal-data'].webSocket.init()")
        page.wait_for_function(SOCKET_OPEN)
        page.wait_for_timeout(500)
        assert sockets[-1].endswith(f"/ws/runs/{run.pk}/?after={last_seq}")
        assert page.inner_text("#run-reply") == reply
        assert len(page.query_selector_all("#timeline .tool-row")) == 1
    finally:
        context.close()


def test_an_observer_watches_a_run_that_someone_else_starts(
    live_server_url: str, browser: Any, observer: Any, operator: Any
) -> None:
    chat = ChatSession.objects.create(user=operator, title="Watched")
    watcher_context, runner_context = browser.new_context(), browser.new_context()
    try:
        runner = runner_context.new_page()
        log_in(runner, live_server_url, operator.username)
        runner.goto(f"{live_server_url}/chat/{chat.pk}/")
        runner.wait_for_function("() => window.htmx !== undefined")
        runner.fill("#id_message", "Hello there")
        runner.click("#run-button")
        runner.wait_for_selector("#run-panel[ws-connect]")

        watcher = watcher_context.new_page()
        log_in(watcher, live_server_url, observer.username)
        watcher.goto(f"{live_server_url}/chat/{chat.pk}/")
        assert not watcher.is_visible("#run-form")
        assert not watcher.is_visible("#stop-button")
        watcher.wait_for_function(SOCKET_OPEN)
        # The run completes on its own (no tool named); the watcher sees it happen.
        watcher.wait_for_selector('#run-status[data-status="stopped"]')
        assert "Offline model" in watcher.inner_text("#run-reply")
        assert "Completed" in watcher.inner_text("#stop-reason")
        assert "Operator or Owner" in watcher.inner_text("#next-action")
    finally:
        watcher_context.close()
        runner_context.close()


def socket_open(selector: str) -> str:
    """A page function: the htmx websocket of the element at `selector` is open."""
    return (
        f"() => document.querySelector({selector!r})?.['htmx-internal-data']"
        "?.webSocket?.socket?.readyState === 1"
    )


LONG_MESSAGE = (
    "Tell me, at a reading pace, everything the offline model would say about a queue "
    "of tasks that grows every night and shrinks every morning, and why that may be fine."
)


def test_the_wall_clock_ticks_every_second_while_a_step_streams(
    live_server_url: str, browser: Any, operator: Any
) -> None:
    chat = ChatSession.objects.create(user=operator, title="Clock")
    run = open_run(chat, user=operator, message=LONG_MESSAGE, mode="normal")
    # A run the agent loop works, seen between two of its events (a step streaming):
    # nothing comes from the server meanwhile, however slow or fast the machine, so
    # the meter can move only by the browser's own ticking.
    move_run(run.pk, RunStatus.THINKING, "Step 1 of 10: asking the model.")
    move_run(run.pk, RunStatus.STREAMING, "Step 1 of 10: answering.", clock_since=time.time())
    context = browser.new_context()
    try:
        page = context.new_page()
        log_in(page, live_server_url, operator.username)
        page.goto(f"{live_server_url}/chat/{chat.pk}/?run={run.pk}")
        page.wait_for_function(socket_open("#run-panel"))
        page.wait_for_selector('#run-status[data-status="streaming"][data-clock-since]')

        seconds = "parseInt(document.querySelector('#budget-wall_clock .meter-value').textContent)"
        start = page.evaluate(seconds)
        page.wait_for_function(f"() => {seconds} >= {start + 2}")
        fill = page.get_attribute("#budget-wall_clock .meter-fill", "width")
        assert fill is not None
        assert fill.endswith("%")

    finally:
        context.close()


def test_the_sidebar_and_the_index_follow_a_run_live(
    live_server_url: str, browser: Any, operator: Any, observer: Any
) -> None:
    chat = ChatSession.objects.create(user=operator, title="Followed")
    runner_context, watcher_context, index_context = (
        browser.new_context(),
        browser.new_context(),
        browser.new_context(),
    )
    try:
        # Someone watches the session page, someone else the chat index.
        watcher = watcher_context.new_page()
        log_in(watcher, live_server_url, observer.username)
        watcher.goto(f"{live_server_url}/chat/{chat.pk}/")
        watcher.wait_for_function(socket_open("aside.chat-side"))
        assert "No runs yet" in watcher.inner_text("#run-history")
        index = index_context.new_page()
        log_in(index, live_server_url, observer.username)
        index.goto(f"{live_server_url}/chat/")
        index.wait_for_function(socket_open("[ws-connect='/ws/chat/sessions/']"))
        assert "Nothing is running" in index.inner_text("#running-now")
        assert index.inner_text(f"#session-{chat.pk}-last-run") == "never run"

        runner = runner_context.new_page()
        log_in(runner, live_server_url, operator.username)
        runner.goto(f"{live_server_url}/chat/{chat.pk}/")
        runner.wait_for_function(socket_open("aside.chat-side"))
        runner.fill("#id_message", LONG_MESSAGE)
        runner.click("#run-button")
        runner.wait_for_selector("#run-panel[ws-connect]")
        run = Run.objects.get(session=chat)
        chip = f"#run-{run.pk}-chip .status-chip"

        # While it streams: the sidebars (the runner's and the watcher's, which had no
        # row for it) say so, and the index lists it as running now.
        runner.wait_for_selector(f"{chip}.status-streaming")
        watcher.wait_for_selector(f"#run-row-{run.pk} {chip}.status-streaming")
        assert runner.inner_text(chip) == "Streaming"
        assert runner.is_visible(f"#run-row-{run.pk}.current")
        index.wait_for_selector(f"#running-{run.pk}")
        index.wait_for_selector(f"#session-{chat.pk}-last-run .status-streaming")
        assert index.inner_text("#running-now-count") == "1"

        # Once it completes: the chips say so, and it has left "Running now".
        runner.wait_for_selector(f"{chip}.status-stopped")
        assert runner.inner_text(f"#run-{run.pk}-chip") == "Stopped Completed"
        watcher.wait_for_selector(f"{chip}.status-stopped")
        index.wait_for_selector(f"#running-{run.pk}", state="detached")
        assert "Nothing is running" in index.inner_text("#running-now")
        assert index.inner_text(f"#session-{chat.pk}-last-run") == "Stopped Completed"
        assert "waiting_approval" not in runner.inner_text("#run-history")
    finally:
        for context in (runner_context, watcher_context, index_context):
            context.close()
