"""A real daphne server on the test database, and headless Chromium driven by Playwright."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from daphne.testing import DaphneProcess
from django.db import connections

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _application() -> Any:
    from channels.routing import get_default_application

    return get_default_application()


@pytest.fixture(scope="session")
def live_server_url(django_db_setup: Any, django_db_blocker: Any) -> Iterator[str]:
    with django_db_blocker.unblock():
        # The server process is forked: it must not inherit an open connection,
        # whose socket it would share with this process.
        connections.close_all()
    # The fork also inherits pytest-django's block on database access: lift it there.
    server = DaphneProcess("127.0.0.1", _application, setup=django_db_blocker.unblock)
    server.start()
    if not server.ready.wait(timeout=30):
        server.terminate()
        raise RuntimeError(f"daphne did not start: {server.errors.get(timeout=1)}")
    yield f"http://127.0.0.1:{server.port.value}"
    server.terminate()
    server.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Browser tests need Debian's chromium at {CHROMIUM} (bin/test installs it).")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop on this thread, which makes Django
    # refuse ORM calls (fixtures, the transactional flush) as if they were async.
    # They are not: Django's docs name this variable for exactly this case.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
