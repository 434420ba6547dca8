"""Test settings: the project's settings, with background work run inline."""

from __future__ import annotations

import os
import tempfile

from controlplane.settings import *  # noqa: F403
from controlplane.settings import STORAGES

BACKGROUND_EAGER = True
EMBEDDED_SCHEDULER = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    **STORAGES,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
NOTIFY_RETRY_BASE_SECONDS = 0.0
# The offline model answers at once (its demo pace is for people; the live browser
# tests below slow it down again to press Stop mid-stream).
OFFLINE_TOKEN_DELAY_SECONDS = 0.0
# Transactional tests empty the database with `flush` after each test, append-only
# tables included (controlplane/management/commands/flush.py).
FLUSH_ERASES_HISTORY = True

# The browser tests serve the app from a daphne process of its own, which must see
# the test database: on SQLite that means a file, not the in-memory default.
if "sqlite" in DATABASES["default"]["ENGINE"]:  # noqa: F405  (controlplane.runtime.sqlite)
    # One file per test run, so that concurrent runs do not share a database.
    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": os.path.join(tempfile.gettempdir(), f"controlplane-test-{os.getpid()}.sqlite3")
    }
else:
    DATABASES["default"]["TEST"] = {"NAME": f"test_controlplane_{os.getpid()}"}  # noqa: F405
if CACHES["default"]["BACKEND"].endswith("FileBasedCache"):  # noqa: F405
    CACHES["default"]["LOCATION"] = os.path.join(  # noqa: F405
        tempfile.gettempdir(), f"controlplane-test-cache-{os.getpid()}"
    )

# A live server for the browser tests runs in a process of its own: it is told the
# test run's database and cache, so both processes see the same data.
if os.environ.get("CONTROLPLANE_LIVE_TEST_DB"):
    DATABASES["default"]["NAME"] = os.environ["CONTROLPLANE_LIVE_TEST_DB"]  # noqa: F405
    DATABASES["default"]["TEST"]["NAME"] = os.environ["CONTROLPLANE_LIVE_TEST_DB"]  # noqa: F405
if os.environ.get("CONTROLPLANE_LIVE_TEST_CACHE"):
    CACHES["default"]["LOCATION"] = os.environ["CONTROLPLANE_LIVE_TEST_CACHE"]  # noqa: F405
if os.environ.get("CONTROLPLANE_LIVE_TEST_DB"):
    # The live server does background work as the embedded mode does, on its
    # in-process pool: a chat run streams while the request that started it has
    # returned (inline, it would hold daphne's one thread for sync views, Stop
    # included). The offline model streams slowly enough for a person to press Stop.
    BACKGROUND_EAGER = False
    CELERY_BROKER_URL = ""
    OFFLINE_TOKEN_DELAY_SECONDS = float(os.environ.get("OFFLINE_TOKEN_DELAY_SECONDS", "0.2"))
    INSTALLED_APPS = [*INSTALLED_APPS, "tests.live_server.LiveServerConfig"]  # noqa: F405

# The race tests run 20 to 50 threads that each hold a connection at the same moment;
# a bounded pool would make them wait on each other, so tests connect directly.
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":  # noqa: F405
    DATABASES["default"].get("OPTIONS", {}).pop("pool", None)  # noqa: F405
    # PostgreSQL's backend, whose flush (after each transactional test) truncates only
    # the tables that hold rows: see tests/postgresql/README.md.
    DATABASES["default"]["ENGINE"] = "tests.postgresql"  # noqa: F405
