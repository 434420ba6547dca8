"""A real daphne server on the test database, for the suites that need one.

A conftest imports `live_server_url` to offer it to the tests below it. pytest makes
each import a fixture of its own, so each suite starts its own process. That is on
purpose: the server keeps in-process caches (content type ids) from before a
transactional test's flush, and a process shared by two suites carried them from one
suite into the other.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.apps import AppConfig
from django.conf import settings
from django.db import connection


class LiveServerConfig(AppConfig):
    """Installed in the live server's process only (tests/settings.py). Between
    transactional tests the test process flushes the database and the content types
    come back under new ids; this process would otherwise write the ids it cached (an
    audit event's), which no longer exist, when a second test of the suite does what
    an earlier one did. Every lookup here reads the table instead: the gateway's
    requests, which bypass Django's middleware, included."""

    name = "tests"
    label = "live_server_tests"

    def ready(self) -> None:
        from django.contrib.contenttypes.models import ContentTypeManager

        looked_up = ContentTypeManager.get_for_model
        looked_up_by_id = ContentTypeManager.get_for_id

        def get_for_model(manager: Any, *args: Any, **kwargs: Any) -> Any:
            manager.clear_cache()
            return looked_up(manager, *args, **kwargs)

        def get_for_id(manager: Any, *args: Any, **kwargs: Any) -> Any:
            manager.clear_cache()
            return looked_up_by_id(manager, *args, **kwargs)

        ContentTypeManager.get_for_model = get_for_model  # type: ignore[method-assign,assignment]
        ContentTypeManager.get_for_id = get_for_id  # type: ignore[method-assign,assignment]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def live_server_url(django_db_setup: Any, django_db_blocker: Any) -> Iterator[str]:
    """daphne in a separate process, as in production, on this run's test database."""
    with django_db_blocker.unblock():
        database = connection.settings_dict["NAME"]
    port = _free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "CONTROLPLANE_LIVE_TEST_DB": str(database),
        "CONTROLPLANE_LIVE_TEST_CACHE": str(settings.CACHES["default"].get("LOCATION", "")),
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "controlplane.asgi:application",
        ],
        env=env,
        cwd=settings.BASE_DIR,
    )
    # Waits until daphne listens; the deadline only keeps a broken start from hanging.
    deadline = time.monotonic() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError("daphne did not start for the live server tests") from None
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
