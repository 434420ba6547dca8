"""The test backend's flush (tests/postgresql/base.py) leaves what Django's leaves:
every table empty, the append-only ones included, and the sequences where they were.
And Django still flushes after a transactional test the way the backend relies on."""

from __future__ import annotations

import inspect

import pytest
from django.core.management import call_command
from django.core.management.color import no_style
from django.db import connection
from django.test import TransactionTestCase

from controlplane.models import AuditEvent
from controlplane.tiers import Tier
from routing.models import OperationLog
from selfheal.models import Task
from tests.personas import make_user
from tests.selfheal import make_task, make_worker

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def rows_by_table() -> dict[str, int]:
    tables = connection.introspection.django_table_names(only_existing=True, include_views=False)
    counts = {}
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"SELECT count(*) FROM {connection.ops.quote_name(table)}")  # noqa: S608
            counts[table] = cursor.fetchone()[0]
    return counts


def flush_as_a_transactional_test_does() -> None:
    call_command(
        "flush",
        verbosity=0,
        interactive=False,
        reset_sequences=False,
        allow_cascade=False,
        inhibit_post_migrate=True,
    )


def test_the_flush_empties_every_table_the_append_only_ones_included() -> None:
    owner = make_user("wendy-owner", Tier.OWNER)
    worker, _ = make_worker("alpha", ["ops"])
    make_task("Rotate the keys", "noop")
    OperationLog.objects.create(request_id="r-1", operation="chat", user=owner, status="ok")
    before = rows_by_table()
    assert AuditEvent.objects.exists()
    for table in ("auth_user", "auth_group", "auth_user_groups", "routing_operationlog"):
        assert before[table] > 0, table
    assert worker.pk is not None
    assert Task.objects.exists()

    flush_as_a_transactional_test_does()

    assert {table: count for table, count in rows_by_table().items() if count} == {}


def test_the_flush_leaves_the_sequences_where_they_were() -> None:
    first = OperationLog.objects.create(request_id="r-1", operation="chat", status="ok")
    flush_as_a_transactional_test_does()

    second = OperationLog.objects.create(request_id="r-2", operation="chat", status="ok")
    assert second.pk > first.pk


def test_the_flush_of_an_empty_database_runs_no_statement() -> None:
    flush_as_a_transactional_test_does()

    assert connection.ops.sql_flush(no_style(), ["auth_user", "selfheal_task"]) == []


def test_djangos_transactional_tests_still_flush_without_restarting_sequences() -> None:
    # The backend empties only the tables that hold rows when the sequences stay
    # (Django's own TRUNCATE otherwise): this is what makes the test flush fast.
    teardown = inspect.getsource(TransactionTestCase._fixture_teardown)  # type: ignore[attr-defined]
    assert '"flush"' in teardown
    assert "reset_sequences=False" in teardown
