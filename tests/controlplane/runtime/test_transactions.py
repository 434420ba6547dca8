"""`controlplane.runtime.transactions.transient`: a transaction whose commit does not wait for
the disk (SQLite: `synchronous` NORMAL for it alone; PostgreSQL: `synchronous_commit`
off for it alone), and a plain savepoint inside a caller's transaction.

The database's own settings are read back (`PRAGMA synchronous`, `SHOW
synchronous_commit`), so these tests run outside the test's transaction
(`transactional_db`) where they need the outermost transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, connections, transaction

from controlplane.runtime.transactions import transient
from routing.models import Reservation

ON_SQLITE = connection.vendor == "sqlite"
sqlite_only = pytest.mark.skipif(not ON_SQLITE, reason="SQLite's PRAGMA synchronous")

# PRAGMA synchronous levels.
NORMAL, FULL, EXTRA = 1, 2, 3


class Failure(Exception):
    pass


def hold_then_fail(request_id: str, level: list[Any]) -> None:
    """Hold inside transient(), note the level the database commits at, then fail."""
    with transient():
        hold(request_id)
        level.append(synchronous() if ON_SQLITE else synchronous_commit())
        raise Failure


def hold(request_id: str) -> Reservation:
    return Reservation.objects.create(request_id=request_id, amount=Decimal("0.5"))


def held(request_id: str) -> bool:
    return Reservation.objects.filter(request_id=request_id).exists()


def seen_by_another_connection(request_id: str) -> bool:
    """Whether another connection (another thread's) sees the row: it was committed."""

    def look() -> bool:
        try:
            return held(request_id)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1) as executor:
        return executor.submit(look).result()


# -- SQLite -----------------------------------------------------------------------------


def synchronous() -> int:
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA synchronous")
        (level,) = cursor.fetchone()
    return int(level)


@pytest.fixture
def level_before(transactional_db: Any, request: pytest.FixtureRequest) -> Iterator[int]:
    """The connection's `synchronous` before transient() (the test's parameter), put
    back to what it was afterwards: the connection outlives the test."""
    original = synchronous()
    with connection.cursor() as cursor:
        cursor.execute(f"PRAGMA synchronous = {int(request.param)}")
    yield int(request.param)
    with connection.cursor() as cursor:
        cursor.execute(f"PRAGMA synchronous = {original}")


@sqlite_only
@pytest.mark.parametrize("level_before", [FULL, EXTRA], indirect=True)
def test_on_sqlite_synchronous_is_normal_inside_and_set_back_after(level_before: int) -> None:
    with transient():
        assert connection.in_atomic_block
        inside = synchronous()
        hold("call-1")

    assert inside == NORMAL
    assert synchronous() == level_before
    assert seen_by_another_connection("call-1")


@sqlite_only
@pytest.mark.parametrize("level_before", [FULL, EXTRA], indirect=True)
def test_on_sqlite_synchronous_is_set_back_after_an_error_too(level_before: int) -> None:
    inside: list[int] = []

    with pytest.raises(Failure):
        hold_then_fail("call-1", inside)

    assert inside == [NORMAL]
    assert synchronous() == level_before
    assert not held("call-1")  # rolled back


@sqlite_only
@pytest.mark.parametrize("level_before", [FULL], indirect=True)
def test_on_sqlite_inside_a_transaction_the_level_is_left_alone(level_before: int) -> None:
    with transaction.atomic():
        with transient():
            inside = synchronous()
            hold("call-1")
        after = synchronous()

    assert inside == after == FULL
    assert held("call-1")


# -- PostgreSQL ---------------------------------------------------------------------------


def synchronous_commit() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        (value,) = cursor.fetchone()
    return str(value)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_on_postgresql_synchronous_commit_is_off_inside_and_on_after() -> None:
    assert synchronous_commit() == "on"

    with transient():
        inside = synchronous_commit()
        hold("call-1")

    assert inside == "off"
    assert synchronous_commit() == "on"
    assert seen_by_another_connection("call-1")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_on_postgresql_synchronous_commit_is_on_after_an_error() -> None:
    inside: list[str] = []

    with pytest.raises(Failure):
        hold_then_fail("call-1", inside)

    assert inside == ["off"]
    assert synchronous_commit() == "on"
    assert not held("call-1")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_on_postgresql_inside_a_transaction_the_callers_commit_decides() -> None:
    with transaction.atomic():
        with transient():
            inside = synchronous_commit()
            hold("call-1")
        after = synchronous_commit()

    assert inside == after == "on"
    assert held("call-1")


# -- inside a caller's transaction: a savepoint ------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_inside_a_transaction_it_is_a_savepoint_the_outer_rollback_undoes() -> None:
    with transaction.atomic():
        with transient():
            assert len(connection.savepoint_ids) == 1
            hold("call-1")
        assert held("call-1")
        assert not seen_by_another_connection("call-1")  # not committed on its own
        transaction.set_rollback(True)

    assert not held("call-1")


@pytest.mark.django_db(transaction=True)
def test_an_error_inside_it_undoes_only_its_own_part_of_the_outer_transaction() -> None:
    with transaction.atomic():
        hold("before")
        with pytest.raises(Failure):
            hold_then_fail("inside", [])
        hold("after")

    assert (held("before"), held("inside"), held("after")) == (True, False, True)


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_it_commits_on_its_own() -> None:
    assert not connection.in_atomic_block

    with transient():
        assert connection.in_atomic_block
        assert connection.savepoint_ids == []  # the outermost block, no savepoint
        hold("call-1")

    assert not connection.in_atomic_block
    assert seen_by_another_connection("call-1")
