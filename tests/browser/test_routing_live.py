"""The Routing page in headless Chromium follows the calls without a reload: a call
a service sends through the gateway shows in the page's spend, its breakdown by
operation and its model mix, on a page opened before the call."""

from __future__ import annotations

from importlib import import_module
from typing import Any

import httpx
import pytest
from django.apps import apps as django_apps

from routing.models import OperationLog, ServiceKey
from tests.browser.test_selfheal_live import log_in, open_live

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SEED = import_module("routing.migrations.0002_seed_catalog_policies_routes")


@pytest.fixture(autouse=True)
def _seeded_routing(db: Any) -> None:
    """The call goes through the seeded offline catalog and routes, which the flush of
    an earlier transactional test removed."""
    SEED.seed(django_apps, None)


def test_a_gateway_call_shows_on_the_open_routing_page_without_reloading(
    live_server_url: str, browser: Any, observer: Any
) -> None:
    _, raw_key = ServiceKey.issue(name="digest worker", service="digests")
    context = browser.new_context()
    try:
        page = context.new_page()
        log_in(page, live_server_url, observer.username)
        navigations = open_live(page, f"{live_server_url}/routing/?range=24h")
        assert "over 0 calls" in page.inner_text("#spend-over-time h2")

        answer = httpx.post(
            f"{live_server_url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {raw_key}", "X-Operation": "summarize"},
            json={"model": "offline/echo", "messages": [{"role": "user", "content": "Hi"}]},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text

        page.wait_for_function(
            "() => document.querySelector('#spend-over-time h2')?.textContent"
            ".includes('over 1 call')"
        )
        assert "summarize" in page.inner_text("#cost-by-operation")
        assert "offline/echo" in page.inner_text("#model-mix")
        assert OperationLog.objects.get().operation == "summarize"
        assert navigations == [], "the page reloaded instead of updating live"
    finally:
        context.close()
