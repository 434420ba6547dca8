"""A reply rated on the chat page changes the Routing page's quality figure: a run
streams to its end, the rating control appears under its reply without a reload, a
verdict (then a changed one) shows on the Routing page for the model that answered."""

from __future__ import annotations

from importlib import import_module
from typing import Any

import pytest
from django.apps import apps as django_apps

from chat.models import ChatSession, Run, RunRating
from chat.run_calls import models_that_answered
from tests.browser.test_chat_live import SOCKET_OPEN, log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _seeded_routing(db: Any) -> None:
    """The run's model call goes through the seeded offline catalog and routes (see
    test_chat_live)."""
    for migration in (
        "routing.migrations.0002_seed_catalog_policies_routes",
        "chat.migrations.0002_run_budgets",
    ):
        import_module(migration).seed(django_apps, None)


def quality_row(page: Any, base_url: str, model: str) -> tuple[str, str]:
    page.goto(f"{base_url}/routing/?range=24h")
    row = page.locator(f'#quality-by-model tr[data-model="{model}"]')
    return row.locator(".good-share").inner_text(), row.locator(".rating-count").inner_text()


def test_a_rating_on_the_chat_page_changes_the_routing_pages_quality_figure(
    live_server_url: str, browser: Any, operator: Any
) -> None:
    chat = ChatSession.objects.create(user=operator, title="Rated run", mode="normal")
    context = browser.new_context()
    try:
        page = context.new_page()
        log_in(page, live_server_url, operator.username)
        page.goto(f"{live_server_url}/chat/{chat.pk}/")
        page.wait_for_function("() => window.htmx !== undefined")
        page.fill("#id_message", "Say hello in one sentence.")
        page.click("#run-button")
        page.wait_for_selector("#run-panel[ws-connect]")
        page.wait_for_function(SOCKET_OPEN)
        # While it streams there is nothing to rate; once it stopped the control
        # arrives with the stop reason, without a reload.
        page.wait_for_selector('#run-status[data-status="stopped"]')
        page.wait_for_selector("#run-rating #rate-good")
        run = Run.objects.get(session=chat)
        [model] = models_that_answered(run.pk)

        routing = context.new_page()
        assert quality_row(routing, live_server_url, model) == ("—", "0")

        page.click("#rate-good")
        page.wait_for_selector('#rate-good[aria-pressed="true"]')
        assert "1 good · 0 bad · you said good" in page.inner_text("#rating-counts")
        assert quality_row(routing, live_server_url, model) == ("100%", "1")

        page.click("#rate-bad")
        page.wait_for_selector('#rate-bad[aria-pressed="true"]')
        assert quality_row(routing, live_server_url, model) == ("0%", "1")
        assert RunRating.objects.get().verdict == "bad"

        # The model's own drill-down says the same.
        routing.click(f'#quality-by-model tr[data-model="{model}"] a')
        routing.wait_for_selector("#own-good-share")
        assert routing.inner_text("#own-good-share") == "0%"
    finally:
        context.close()
