from __future__ import annotations

from collections.abc import Iterator
from importlib import import_module

import pytest
from django.apps import apps

from healthmon.shared_grouper import shared_grouper

ALERTS_MIGRATION = import_module("healthmon.migrations.0003_alerts")


@pytest.fixture(autouse=True)
def _fresh_grouper() -> Iterator[None]:
    # Each test's database starts empty: so does what this process learned from it.
    shared_grouper.forget()
    yield
    shared_grouper.forget()


@pytest.fixture(autouse=True)
def _default_alert_rules(request: pytest.FixtureRequest) -> None:
    # A fresh install has the rules the migration seeds, but the flush after an earlier
    # transactional test removed them: put them back for every test that uses the
    # database (once its test database exists).
    wants_db = request.node.get_closest_marker("django_db") is not None or bool(
        {"db", "transactional_db"} & set(request.fixturenames)
    )
    if not wants_db:
        return
    request.getfixturevalue("django_db_setup")
    with request.getfixturevalue("django_db_blocker").unblock():
        ALERTS_MIGRATION.create_default_rules(apps, None)


@pytest.fixture
def ruff_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scans run only the ruff check: tests of the scan's lifecycle stay about it, and
    make no registry or API call the other checks would."""
    from healthmon import code_scans
    from healthmon.code_checks import ruff

    monkeypatch.setattr(code_scans, "CHECKS", (ruff,))
