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

# Every page reports what the Content-Security-Policy refused (the browser's
# `securitypolicyviolation` event) through a binding: an init script and a binding
# come from the browser's own protocol, which the page's policy does not govern.
# `window.cspReported` counts the reports the test process has received, for a test
# that waits for one.
REPORT_VIOLATIONS = """
window.cspReported = 0;
document.addEventListener("securitypolicyviolation", async (event) => {
  await window.reportCspViolation(
    `${event.effectiveDirective} refused ${event.blockedURI || "inline"} on ${event.documentURI}`
  );
  window.cspReported += 1;
});
"""


class Browser:
    """Chromium, whose pages wait as long as the hang guard for what the tests ask,
    and which notes every Content-Security-Policy violation on any of its pages."""

    def __init__(self, chromium: Any) -> None:
        self.chromium = chromium
        self.csp_violations: list[str] = []

    def new_context(self, **options: Any) -> Any:
        context = self.chromium.new_context(**options)
        context.set_default_timeout(HANG_GUARD_MS)
        context.expose_binding(
            "reportCspViolation", lambda source, text: self.csp_violations.append(text)
        )
        context.add_init_script(REPORT_VIOLATIONS)
        return context


@pytest.fixture(autouse=True)
def _pages_keep_to_the_content_security_policy(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every browser test runs under the enforced policy (Playwright does not bypass
    it) and fails when a page of it broke the policy: something would not work."""
    yield
    if "browser" in request.fixturenames:
        browser = request.getfixturevalue("browser")
        violations, browser.csp_violations[:] = list(browser.csp_violations), []
        assert violations == [], "the Content-Security-Policy refused parts of a page"


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
