"""The budget ledger's statements as plain SQL (`routing.ledger`), and what `budgets`
builds on them: ledger ids remembered per (budget, day) once committed, thresholds
notified only when a settlement newly reaches one.

The `budgets` tests run on committed data (`transactional_db`), in autocommit as on
the gateway's threads: inside a test's transaction nothing would be remembered.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from routing import budget_notices, ledger, reservations
from routing.budgets import BudgetExceeded, budget_day
from routing.models import Budget, BudgetDay, Reservation
from routing.reservations import reserve, settle

LEDGER_TABLE = BudgetDay._meta.db_table


def make_budget(limit: str = "10", scope: str = Budget.Scope.GLOBAL, **target: Any) -> Budget:
    return Budget.objects.create(scope=scope, daily_limit=Decimal(limit), **target)


def make_ledger(
    budget: Budget, limit: str = "10", reserved: str = "0", spent: str = "0", **fields: Any
) -> BudgetDay:
    fields.setdefault("day", budget_day())
    return BudgetDay.objects.create(
        budget=budget,
        limit=Decimal(limit),
        reserved=Decimal(reserved),
        spent=Decimal(spent),
        **fields,
    )


def today(budget: Budget) -> BudgetDay:
    return BudgetDay.objects.get(budget=budget, day=budget_day())


def money(row: BudgetDay) -> tuple[Decimal, Decimal, Decimal]:
    row.refresh_from_db()
    return row.limit, row.reserved, row.spent


def ledger_statements(queries: CaptureQueriesContext) -> list[str]:
    return [query["sql"] for query in queries.captured_queries if LEDGER_TABLE in query["sql"]]


def reads_of_the_ledger(queries: CaptureQueriesContext) -> list[str]:
    return [sql for sql in ledger_statements(queries) if sql.lstrip().upper().startswith("SELECT")]


# hold


@pytest.mark.django_db
def test_a_checked_hold_takes_the_room_left_up_to_the_limit_exactly():
    row = make_ledger(make_budget(), limit="10", reserved="3", spent="6")

    assert ledger.hold(row.pk, Decimal("1"), Decimal("10"), checked=True)

    assert money(row) == (Decimal("10"), Decimal("4"), Decimal("6"))


@pytest.mark.django_db
def test_a_checked_hold_past_the_limit_is_refused_and_leaves_the_row_unchanged():
    row = make_ledger(make_budget(), limit="10", reserved="3", spent="6")

    assert not ledger.hold(row.pk, Decimal("1.01"), Decimal("10"), checked=True)

    assert money(row) == (Decimal("10"), Decimal("3"), Decimal("6"))


@pytest.mark.django_db
def test_an_unchecked_hold_always_holds_even_past_the_limit():
    row = make_ledger(make_budget(), limit="10", reserved="3", spent="6")

    assert ledger.hold(row.pk, Decimal("5"), Decimal("10"), checked=False)
    assert ledger.hold(row.pk, Decimal("100"), Decimal("10"), checked=False)

    assert money(row) == (Decimal("10"), Decimal("108"), Decimal("6"))


@pytest.mark.django_db
def test_a_hold_checks_against_the_limit_it_is_given_and_the_ledger_takes_it_on():
    row = make_ledger(make_budget(), limit="10", reserved="3", spent="6")

    assert not ledger.hold(row.pk, Decimal("2"), Decimal("10"), checked=True)
    assert ledger.hold(row.pk, Decimal("2"), Decimal("12"), checked=True)  # raised today

    assert money(row) == (Decimal("12"), Decimal("5"), Decimal("6"))


# reserve: PostgreSQL's one statement


postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="PostgreSQL reserves in one statement"
)


def a_reservation(request_id: str, amount: str) -> Reservation:
    return Reservation(request_id=request_id, amount=Decimal(amount), operation="chat")


def per_operation(operation: str = "chat") -> Budget:
    return make_budget(scope=Budget.Scope.OPERATION, operation=operation)


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_one_statement_holds_on_every_ledger_and_inserts_the_reservation_with_its_links():
    first = make_ledger(make_budget(), limit="10", reserved="1", spent="2")
    second = make_ledger(per_operation(), "5", spent="4")
    reservation = a_reservation("call", "1")

    with CaptureQueriesContext(connection) as queries:
        refused = ledger.reserve(reservation, [first, second], checked=True, transient=True)

    assert refused is None
    assert len(queries.captured_queries) == 1
    assert money(first) == (Decimal("10"), Decimal("2"), Decimal("2"))
    assert money(second) == (Decimal("5"), Decimal("1"), Decimal("4"))  # full to the cent
    stored = Reservation.objects.get(pk=reservation.pk)
    assert (stored.request_id, stored.amount, stored.status, stored.operation) == (
        "call",
        Decimal("1"),
        Reservation.Status.HELD,
        "chat",
    )
    assert set(stored.days.all()) == {first, second}


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_one_ledger_without_room_leaves_every_ledger_unchanged_and_inserts_nothing():
    first = make_ledger(make_budget(), limit="10", reserved="1")
    second = make_ledger(per_operation(), "5", spent="4.5")
    third = make_ledger(make_budget(scope=Budget.Scope.SERVICE, service="billing"), "1", spent="1")

    refused = ledger.reserve(
        a_reservation("call", "1"), [first, second, third], checked=True, transient=True
    )

    assert refused == second  # the first without room, in primary-key order
    assert money(first) == (Decimal("10"), Decimal("1"), Decimal(0))
    assert money(second) == (Decimal("5"), Decimal(0), Decimal("4.5"))
    assert not Reservation.objects.filter(request_id="call").exists()


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_an_unchecked_reservation_holds_past_the_limit_and_each_ledger_takes_its_new_limit():
    row = make_ledger(make_budget(), limit="10", spent="9")
    row.limit = Decimal("12")  # the budget's limit now

    refused = ledger.reserve(a_reservation("call", "50"), [row], checked=False, transient=True)

    assert refused is None
    assert money(row) == (Decimal("12"), Decimal("50"), Decimal("9"))


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_reservation_in_a_callers_transaction_is_undone_with_it():
    row = make_ledger(make_budget(), limit="10")

    with transaction.atomic():
        ledger.reserve(a_reservation("call", "1"), [row], checked=True, transient=False)
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            assert cursor.fetchone()[0] == "on"  # the caller's commit decides
        transaction.set_rollback(True)

    assert money(row) == (Decimal("10"), Decimal(0), Decimal(0))
    assert not Reservation.objects.exists()


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_reservation_with_no_ledger_is_still_inserted():
    reservation = a_reservation("call", "1")

    assert ledger.reserve(reservation, [], checked=False, transient=True) is None

    assert Reservation.objects.get(pk=reservation.pk).days.count() == 0


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_the_reservation_statement_is_prepared_and_planned_once_per_connection():
    row = make_ledger(make_budget(), limit="100")
    for number in range(7):
        ledger.reserve(a_reservation(f"call-{number}", "1"), [row], checked=True, transient=True)

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE %s",
            ["%WITH wanted (id, new_limit)%"],
        )
        (generic, custom) = cursor.fetchone()
    assert generic >= 1
    assert custom == 0
    assert money(row) == (Decimal("100"), Decimal("7"), Decimal(0))


# spend


@pytest.mark.django_db
def test_spend_moves_the_money_from_reserved_to_spent_and_returns_the_row_after_it():
    row = make_ledger(make_budget(), limit="10", reserved="3", spent="1.5")

    spent, limit, notified = ledger.spend(row.pk, Decimal("2.25"), Decimal("2"))

    assert (spent, limit, notified) == (Decimal("3.75"), Decimal("10"), [])
    assert (type(spent), type(limit)) == (Decimal, Decimal)
    assert money(row) == (Decimal("10"), Decimal("1"), Decimal("3.75"))


@pytest.mark.django_db
def test_spend_returns_exact_18_place_money():
    row = make_ledger(
        make_budget(),
        limit="0.000000000000000010",
        reserved="0.000000000000000007",
        spent="0.1",
    )

    spent, limit, _ = ledger.spend(
        row.pk, Decimal("0.200000000000000003"), Decimal("0.000000000000000007")
    )

    assert spent == Decimal("0.300000000000000003")
    assert limit == Decimal("0.000000000000000010")
    assert money(row)[1:] == (Decimal(0), Decimal("0.300000000000000003"))


@pytest.mark.django_db
def test_spend_adds_money_exactly_where_a_float_would_not():
    row = make_ledger(make_budget(), limit="10", reserved="0.2", spent="0.1")

    spent, limit, _ = ledger.spend(row.pk, Decimal("0.2"), Decimal("0.2"))

    # As floats (SQLite's REAL, before money was text there) 0.1 + 0.2 is 0.30000000000000004.
    assert spent == Decimal("0.3")
    assert (type(spent), type(limit), limit) == (Decimal, Decimal, Decimal("10"))


@pytest.mark.django_db
@pytest.mark.parametrize("stored", [[], [50], [50, 80, 100]])
def test_spend_returns_the_thresholds_already_notified_as_a_list(stored):
    row = make_ledger(make_budget(), reserved="1", thresholds_notified=stored)

    _, _, notified = ledger.spend(row.pk, Decimal("1"), Decimal("1"))

    assert notified == stored
    assert all(type(threshold) is int for threshold in notified)


# close


def held_reservation(request_id: str = "call") -> Reservation:
    return Reservation.objects.create(request_id=request_id, amount=Decimal("2"))


@pytest.mark.django_db
def test_close_closes_a_reservation_that_is_in_the_given_status():
    reservation = held_reservation()
    at = timezone.now() - timedelta(seconds=3)

    closed = ledger.close(
        reservation.pk,
        Reservation.Status.HELD,
        to=Reservation.Status.SETTLED,
        actual=Decimal("1.25"),
        at=at,
    )

    assert closed
    reservation.refresh_from_db()
    assert (reservation.status, reservation.actual) == (
        Reservation.Status.SETTLED,
        Decimal("1.25"),
    )
    assert reservation.closed_at == at


@pytest.mark.django_db
def test_close_leaves_a_reservation_in_another_status_as_it_is():
    reservation = held_reservation()

    closed = ledger.close(
        reservation.pk,
        Reservation.Status.RELEASED,
        to=Reservation.Status.SETTLED,
        actual=Decimal("1"),
        at=timezone.now(),
    )

    assert not closed
    reservation.refresh_from_db()
    assert (reservation.status, reservation.actual, reservation.closed_at) == (
        Reservation.Status.HELD,
        None,
        None,
    )


@pytest.mark.django_db
def test_close_closes_a_reservation_only_once():
    reservation = held_reservation()
    first_at = timezone.now()
    held, settled = Reservation.Status.HELD, Reservation.Status.SETTLED

    assert ledger.close(reservation.pk, held, to=settled, actual=Decimal("1"), at=first_at)
    later = first_at + timedelta(hours=1)
    assert not ledger.close(reservation.pk, held, to=settled, actual=Decimal("9"), at=later)

    reservation.refresh_from_db()
    assert (reservation.actual, reservation.closed_at) == (Decimal("1"), first_at)


# committed


@pytest.mark.django_db
def test_committed_sums_reserved_and_spent_per_budget_for_that_day_only(operator):
    day = budget_day()
    everything = make_budget("100")
    mine = make_budget("10", Budget.Scope.USER, user=operator)
    chat = make_budget("10", Budget.Scope.OPERATION, operation="chat")
    other = make_budget("10", Budget.Scope.SERVICE, service="billing")
    make_ledger(everything, reserved="1.5", spent="2.25")
    make_ledger(everything, reserved="40", spent="50", day=day - timedelta(days=1))
    make_ledger(mine, reserved="0", spent="3")
    make_ledger(chat, reserved="7", spent="0", day=day + timedelta(days=1))
    make_ledger(other, reserved="5", spent="5")  # not asked about

    held = ledger.committed([everything.pk, mine.pk, chat.pk], day)

    assert held == {everything.pk: Decimal("3.75"), mine.pk: Decimal("3")}
    assert all(type(amount) is Decimal for amount in held.values())


@pytest.mark.django_db
def test_committed_is_exact_to_18_places():
    budget = make_budget("1")
    make_ledger(budget, reserved="0.000000000000000001", spent="0.100000000000000002")

    assert ledger.committed([budget.pk], budget_day()) == {
        budget.pk: Decimal("0.100000000000000003")
    }


# What `reservations` builds on them, on committed data as on the gateway's threads.


@pytest.fixture
def fresh_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ledger remembered from another test (the memory lives as long as the process)."""
    monkeypatch.setattr(reservations, "_known_ledgers", {})


@pytest.fixture
def gateway_thread(transactional_db: Any, fresh_memory: None) -> Iterator[ThreadPoolExecutor]:
    """A thread of its own, as the gateway's pool; its connection is closed before
    the test database is flushed."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="ledger-test")
    yield pool
    pool.submit(connections.close_all).result()
    pool.shutdown()


class Notices:
    """Records what the budgets module notifies."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, subject: str, body: str = "", *, dedupe_key: str, **_: Any) -> list:
        with self._lock:
            self.keys.append(dedupe_key)
        return []


@pytest.fixture
def notices(monkeypatch: pytest.MonkeyPatch) -> Notices:
    notices = Notices()
    monkeypatch.setattr(budget_notices, "notify", notices)
    return notices


def test_the_second_reservation_of_the_day_reads_no_ledger(gateway_thread, operator):
    everything, mine = make_budget("100"), make_budget("10", Budget.Scope.USER, user=operator)
    gateway_thread.submit(reserve, "first", Decimal("1"), [everything, mine]).result()

    with CaptureQueriesContext(connection) as reserving:
        second = reserve("second", Decimal("2"), [everything, mine])

    assert reads_of_the_ledger(reserving) == []
    # PostgreSQL holds on both and inserts the reservation in one statement; SQLite
    # holds on each with a statement of its own.
    assert len(ledger_statements(reserving)) == (1 if connection.vendor == "postgresql" else 2)
    if connection.vendor == "postgresql":
        assert len(reserving.captured_queries) == 1  # one round trip in all
    assert money(today(everything))[1:] == money(today(mine))[1:] == (Decimal("3"), Decimal(0))
    assert set(second.days.all()) == {today(everything), today(mine)}


def test_a_refusal_on_a_remembered_ledger_names_its_limit_and_what_is_spent(gateway_thread):
    budget = make_budget("10")
    settle(reserve("done", Decimal("6"), [budget]), Decimal("6"))
    reserve("in-flight", Decimal("3"), [budget])

    with pytest.raises(BudgetExceeded) as refused:
        reserve("one-too-many", Decimal("1.5"), [budget])

    assert "daily limit is $10.00, $6.00 is spent and $3.00 reserved" in str(refused.value)
    assert money(today(budget)) == (Decimal("10"), Decimal("3"), Decimal("6"))
    assert not Reservation.objects.filter(request_id="one-too-many").exists()


def test_an_owners_new_limit_applies_at_the_next_reservation(gateway_thread):
    budget = make_budget("10")
    reserve("before", Decimal("4"), [budget])
    # The routing table reads the budget again once the Owner's change commits.
    changed = Budget.objects.get(pk=budget.pk)
    changed.daily_limit = Decimal("6")
    changed.save()

    reserve("at-the-new-limit", Decimal("1"), [changed])

    assert money(today(budget)) == (Decimal("6"), Decimal("5"), Decimal(0))
    with CaptureQueriesContext(connection) as reserving:
        reserve("fills-it", Decimal("1"), [changed])
    assert reads_of_the_ledger(reserving) == []  # the new limit is the one remembered
    with pytest.raises(BudgetExceeded, match=r"daily limit is \$6\.00"):
        reserve("past-the-new-limit", Decimal("0.5"), [changed])
    assert money(today(budget)) == (Decimal("6"), Decimal("6"), Decimal(0))


def test_a_limit_changed_and_changed_back_applies_on_a_process_that_remembers_the_old_one(
    gateway_thread, monkeypatch
):
    # Two gateway processes, each with its own memory of the day's ledgers.
    first_process: dict[Any, Any] = {}
    budget = make_budget("10")
    monkeypatch.setattr(reservations, "_known_ledgers", first_process)
    reserve("first-process", Decimal("1"), [budget])
    lowered = Budget.objects.get(pk=budget.pk)
    lowered.daily_limit = Decimal("5")
    lowered.save()
    monkeypatch.setattr(reservations, "_known_ledgers", {})
    reserve("second-process", Decimal("1"), [lowered])  # applies $5 to the ledger
    restored = Budget.objects.get(pk=budget.pk)
    restored.daily_limit = Decimal("10")
    restored.save()
    monkeypatch.setattr(reservations, "_known_ledgers", first_process)

    reserve("first-process-again", Decimal("7"), [restored])

    assert money(today(budget)) == (Decimal("10"), Decimal("9"), Decimal(0))


def test_a_ledger_made_in_a_transaction_that_rolled_back_is_not_remembered(gateway_thread):
    doomed, other = make_budget("10"), make_budget("10", Budget.Scope.SERVICE, service="billing")
    with transaction.atomic():
        reserve("rolled-back", Decimal("1"), [doomed])
        transaction.set_rollback(True)
    assert not BudgetDay.objects.exists()
    # Another ledger is made meanwhile (on SQLite it takes the rolled-back row's id).
    reserve("other", Decimal("2"), [other])

    again = reserve("again", Decimal("1"), [doomed])

    assert money(today(other)) == (Decimal("10"), Decimal("2"), Decimal(0))
    assert money(today(doomed)) == (Decimal("10"), Decimal("1"), Decimal(0))
    assert list(again.days.all()) == [today(doomed)]


def test_a_settlement_notifies_each_threshold_once_and_otherwise_only_updates_the_ledger(
    gateway_thread, notices
):
    budget = make_budget("10")
    day = budget_day().isoformat()
    # (cost, the threshold it newly reaches): 40%, 50%, 55%, 80%, 90%, 100%, 110%.
    steps = [("4", None), ("1", 50), ("0.5", None), ("2.5", 80), ("1", None), ("1", 100)]
    steps.append(("1", None))
    expected: list[str] = []

    for number, (cost, reached) in enumerate(steps):
        # Approved, so that the last one may go past the limit.
        reservation = reserve(f"call-{number}", Decimal(cost), [budget], approved=True)
        with CaptureQueriesContext(connection) as settling:
            assert settle(reservation, Decimal(cost))
        if reached is None:
            assert [sql.lstrip()[:6].upper() for sql in ledger_statements(settling)] == ["UPDATE"]
        else:
            expected.append(f"budget:{budget.pk}:{day}:{reached}")
        assert notices.keys == expected, f"after call-{number}"

    assert today(budget).thresholds_notified == [50, 80, 100]
    assert money(today(budget)) == (Decimal("10"), Decimal(0), Decimal("11"))


# transaction=True: a process remembers only ledgers it knows committed (autocommit).
@pytest.mark.django_db(transaction=True)
def test_a_remembered_ledger_gone_from_the_table_is_read_again_not_a_failure(monkeypatch):
    # A process remembers each budget's ledger of the day; a database emptied or
    # restored under it (as a test's flush does under the live server) loses the row.
    monkeypatch.setattr(reservations, "_known_ledgers", {})
    budget = Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal(10))
    first = reservations.reserve("first", Decimal(1), [budget])
    assert reservations._known_ledgers  # remembered: the next call reads no ledger
    reservations.release(first)
    Reservation.days.through.objects.all().delete()
    BudgetDay.objects.filter(budget=budget).delete()

    second = reservations.reserve("second", Decimal(2), [budget])

    (ledger,) = BudgetDay.objects.filter(budget=budget)
    assert (ledger.reserved, second.amount) == (Decimal(2), Decimal(2))
