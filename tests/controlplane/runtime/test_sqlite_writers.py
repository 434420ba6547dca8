"""SQLite's write transactions within one process take turns on a lock of their own
(`controlplane.runtime.sqlite`), instead of SQLite's busy handler sleeping between tries."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
from django.db import OperationalError, connection, connections, transaction

from controlplane.runtime.sqlite.base import _writer_lock
from routing.models import Reservation

pytestmark = [
    pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's write lock"),
    pytest.mark.django_db(transaction=True),
]


def hold(request_id: str) -> None:
    Reservation.objects.create(request_id=request_id, amount=Decimal("0.5"))


class Writer:
    """A write transaction on a thread of its own, kept open until told to end."""

    def __init__(self, pool: ThreadPoolExecutor, request_id: str) -> None:
        self.inside = threading.Event()
        self.end = threading.Event()
        self.done: Future[None] = pool.submit(self._write, request_id)

    def _write(self, request_id: str) -> None:
        try:
            with transaction.atomic():
                hold(request_id)
                self.inside.set()
                assert self.end.wait(timeout=30)
        finally:
            connections.close_all()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as pool:
        yield pool


def on_own_connection(function: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        try:
            return function()
        finally:
            connections.close_all()

    return run


def writers_queue_is_taken() -> bool:
    return _writer_lock(str(connection.settings_dict["NAME"])).locked()


def written(request_id: str) -> bool:
    return Reservation.objects.filter(request_id=request_id).exists()


def test_a_second_writer_waits_for_the_first_to_commit_then_goes_at_once(pool):
    first = Writer(pool, "first")
    assert first.inside.wait(timeout=10)
    second = Writer(pool, "second")

    assert writers_queue_is_taken()
    assert not second.inside.wait(timeout=0.3)  # queued behind the first
    first.end.set()
    first.done.result(timeout=10)
    assert second.inside.wait(timeout=10)
    second.end.set()
    second.done.result(timeout=10)

    assert written("first")
    assert written("second")


def test_a_rolled_back_writer_lets_the_next_one_in(pool):
    def fail() -> None:
        with transaction.atomic():
            hold("rolled-back")
            raise ValueError("changed my mind")

    with pytest.raises(ValueError, match="changed my mind"):
        pool.submit(on_own_connection(fail)).result(timeout=10)

    def write_in_a_transaction() -> None:
        with transaction.atomic():
            hold("after")

    assert not writers_queue_is_taken()
    pool.submit(on_own_connection(write_in_a_transaction)).result(timeout=10)
    assert not written("rolled-back")
    assert written("after")
    assert not writers_queue_is_taken()


def test_a_connection_closed_inside_its_transaction_lets_the_next_writer_in(pool):
    def close_inside() -> None:
        transaction.atomic().__enter__()  # left open, as a thread that died mid-way
        hold("abandoned")
        connection.close()

    with ThreadPoolExecutor(1) as dying:  # a thread of its own, not reused after
        dying.submit(close_inside).result(timeout=10)
    assert not writers_queue_is_taken()

    def write_in_a_transaction() -> None:
        with transaction.atomic():
            hold("after")

    pool.submit(on_own_connection(write_in_a_transaction)).result(timeout=10)
    assert written("after")
    assert not written("abandoned")


def test_a_writer_kept_waiting_past_the_timeout_gets_database_is_locked(pool, monkeypatch):
    first = Writer(pool, "first")
    assert first.inside.wait(timeout=10)

    def write_with_a_short_timeout() -> None:
        monkeypatch.setitem(connection.settings_dict["OPTIONS"], "timeout", 0.2)
        with transaction.atomic():
            hold("second")

    try:
        with pytest.raises(OperationalError, match="database is locked"):
            pool.submit(on_own_connection(write_with_a_short_timeout)).result(timeout=10)
    finally:
        first.end.set()
        first.done.result(timeout=10)
    assert written("first")
    assert not written("second")
