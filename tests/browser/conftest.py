"""A real daphne server on the test database, and headless Chromium driven by Playwright."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from benchmarks.browser import CHROMIUM, launch_chromium
from tests.live_server import live_server_url  # noqa: F401  (the fixture, for these tests)

# Every wait of the browser tests is for a condition (a selector, a socket open, a
# count); its deadline only keeps a broken test from hanging, on however busy a machine.
HANG_GUARD_MS = 120_000


class Browser:
    """Chromium, whose pages wait as long as the hang guard for what the tests ask."""

    def __init__(self, chromium: Any) -> None:
        self.chromium = chromium

    def new_context(self, **options: Any) -> Any:
        context = self.chromium.new_context(**options)
        context.set_default_timeout(HANG_GUARD_MS)
        return context


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Browser tests need Debian's chromium at {CHROMIUM} (bin/test installs it).")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop on this thread, which makes Django
    # refuse ORM calls (fixtures, the transactional flush) as if they were async.
    # They are not: Django's docs name this variable for exactly this case.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            chromium = launch_chromium(playwright)
            yield Browser(chromium)
            chromium.close()
