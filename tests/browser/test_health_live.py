"""The Health page in headless Chromium: errors ingested while it is open appear
without a reload, a new pattern as a new row and a known one with its new count.

Ingest runs in this test process, on the live server's database. Its event reaches
the page's socket through Redis when the suite runs with one; on the embedded
default (an in-memory layer in each process) it cannot, and the socket's catch-up
look finds the new rows instead: either way the page updates by itself.
"""

from __future__ import annotations

from typing import Any

import pytest

from healthmon.shared_grouper import shared_grouper
from tests.browser.test_selfheal_live import log_in, open_live
from tests.healthmon.health_data import ingest_lines, make_source

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

KNOWN = "Payment gateway timed out after 30s for order 1234"
NEW = "Inventory service returned <503> for sku A-77"


def test_new_errors_appear_on_the_open_health_page_without_reloading(
    live_server_url: str, browser: Any, observer: Any
) -> None:
    shared_grouper.forget()  # this process's grouper, against this test's empty database
    source = make_source()
    known = ingest_lines(source, KNOWN, 2)
    context = browser.new_context()
    try:
        page = context.new_page()
        log_in(page, live_server_url, observer.username)
        navigations = open_live(page, f"{live_server_url}/health/")
        assert page.inner_text(f"#fp-count-{known.pk}") == "2"

        new = ingest_lines(source, NEW, 1)
        ingest_lines(source, KNOWN, 3)

        row = page.wait_for_selector(f"#fp-{new.pk}")
        assert "Inventory service returned <*> for sku" in row.inner_text()  # escaped, shown
        page.wait_for_function(
            f"() => document.querySelector('#fp-count-{known.pk}')?.textContent.trim() === '5'"
        )
        assert page.locator(f"#fp-{known.pk}").count() == 1
        assert navigations == [], "the Health page reloaded instead of updating live"
    finally:
        context.close()
        shared_grouper.forget()
