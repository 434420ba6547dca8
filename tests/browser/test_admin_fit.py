"""The operator panel in Chromium at 1,440 px: the product's dark theme, and the widest
lists (tasks, the cost log) fit the screen with long text and every column in it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from routing.models import OperationLog
from selfheal.models import Task, Worker
from tests.browser.test_content_security_policy import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PRODUCT_BACKGROUND = "rgb(15, 18, 22)"  # --bg of static/css/theme.css


def overflow(page: Any) -> dict[str, int]:
    """How far the page and the list reach past where they may (0 or less: they fit)."""
    return page.evaluate(
        """() => {
            const table = document.querySelector('#result_list');
            const results = table.closest('.results');
            const filter = document.querySelector('#changelist-filter');
            return {
                page: document.documentElement.scrollWidth - window.innerWidth,
                scrolled: results.scrollWidth - results.clientWidth,
                under_filter: Math.ceil(table.getBoundingClientRect().right)
                    - Math.floor(filter.getBoundingClientRect().left),
            };
        }"""
    )


def test_the_widest_lists_fit_a_1440_px_screen_in_the_dark_theme(
    live_server_url: str, browser: Any, owner: Any
) -> None:
    worker = Worker.objects.create(name="builder-with-a-rather-long-hostname-01.internal")
    for n in range(3):
        Task.objects.create(
            # As long as a title may be: 200 characters.
            title=(f"Rebuild the search index for every tenant after schema change {n} " * 3)[:200],
            kind="maintenance.reindex_everything_for_all_tenants",
            source=Task.Source.MANUAL,
            lease_worker=worker,
        )
        OperationLog.objects.create(
            request_id=f"req-{n}",
            operation="summarize-incident-timeline-for-postmortem",
            kind="chat",
            mode="careful",
            service="incident-bot",
            model_used="openrouter/anthropic/claude-3.5-sonnet-20241022",
            cost=Decimal("0.000123456789"),
            prompt_tokens=123456,
            completion_tokens=7890,
        )
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    try:
        page = context.new_page()
        log_in(page, live_server_url, owner.username)
        for path in ["/admin/selfheal/task/", "/admin/routing/operationlog/"]:
            page.goto(f"{live_server_url}{path}")
            page.wait_for_selector("#result_list tbody tr")
            assert (
                page.evaluate("() => getComputedStyle(document.body).backgroundColor")
                == PRODUCT_BACKGROUND
            )
            past = overflow(page)
            assert max(past.values()) <= 0, (path, past)
            # A long title is cut short in its cell, the whole of it on hover.
            assert page.locator("#result_list td span[title]").count() >= 1
    finally:
        context.close()
