from __future__ import annotations

import pytest
from django.conf import settings
from django.db import connection


@pytest.fixture
def daphne_sees_the_test_database(monkeypatch: pytest.MonkeyPatch) -> None:
    """A command's daphne process runs with these settings: point it at this test
    run's database and cache, as the browser tests' live server is."""
    monkeypatch.setenv("CONTROLPLANE_LIVE_TEST_DB", str(connection.settings_dict["NAME"]))
    location = settings.CACHES["default"].get("LOCATION", "")
    if location:
        monkeypatch.setenv("CONTROLPLANE_LIVE_TEST_CACHE", str(location))
