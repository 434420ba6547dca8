"""A call's settlement and its log row, written together (`reservations.settle(log_row=)`):
on PostgreSQL in one statement, elsewhere in one transaction. Run on committed data
(`transactional_db`), in autocommit as on the gateway's threads."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from routing import budget_notices
from routing.models import Budget, OperationLog, Reservation
from routing.reservations import release, reserve, settle
from tests.routing.test_budgets import (
    Notices,
    dollars,
    ledger,
    lose_in_a_crash,
    make_budget,
    stored,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def notices(monkeypatch: pytest.MonkeyPatch) -> Notices:
    notices = Notices()
    monkeypatch.setattr(budget_notices, "notify", notices)
    return notices


def log_row(request_id: str, cost: str) -> OperationLog:
    return OperationLog(
        request_id=request_id,
        operation="chat",
        service="billing",
        model_requested="acme/model",
        model_used="acme/model",
        cost=dollars(cost),
        cost_source=OperationLog.CostSource.PROVIDER,
        attempts=[{"model": "acme/model", "outcome": "ok"}],
    )


def test_the_settlement_and_the_log_row_are_written_together(operator):
    everything, mine = make_budget("10"), make_budget("5", Budget.Scope.USER, user=operator)
    reservation = reserve("call", dollars("2"), [everything, mine])
    row = log_row("call", "1.25")

    with CaptureQueriesContext(connection) as settling:
        assert settle(reservation, dollars("1.25"), log_row=row) is True

    if connection.vendor == "postgresql":
        assert len(settling.captured_queries) == 1  # one round trip, one commit
    for budget in (everything, mine):
        assert (ledger(budget).spent, ledger(budget).reserved) == (dollars("1.25"), 0)
    assert (stored(reservation).status, stored(reservation).actual) == (
        Reservation.Status.SETTLED,
        dollars("1.25"),
    )
    assert reservation.status == Reservation.Status.SETTLED
    logged = OperationLog.objects.get(pk=row.pk)
    assert (logged.request_id, logged.cost, logged.attempts) == (
        "call",
        dollars("1.25"),
        [{"model": "acme/model", "outcome": "ok"}],
    )


def test_a_released_reservation_settled_with_its_row_adds_to_spent_only():
    budget = make_budget("10")
    reservation = reserve("call", dollars("2"), [budget])
    release(reservation)

    assert settle(reservation, dollars("0.5"), log_row=log_row("call", "0.5")) is True

    assert (ledger(budget).spent, ledger(budget).reserved) == (dollars("0.5"), 0)
    assert OperationLog.objects.filter(request_id="call").count() == 1


def test_settling_again_changes_no_ledger_and_still_logs_the_row():
    budget = make_budget("10")
    reservation = reserve("call", dollars("2"), [budget])
    settle(reservation, dollars("1"))

    assert settle(reservation, dollars("1"), log_row=log_row("call", "1")) is False

    assert (ledger(budget).spent, ledger(budget).reserved) == (dollars("1"), 0)
    assert OperationLog.objects.filter(request_id="call").count() == 1


def test_a_lost_reservation_settled_with_its_row_is_recorded_in_full(operator):
    everything, mine = make_budget("10"), make_budget("5", Budget.Scope.USER, user=operator)
    reservation = reserve("lost-call", dollars("2"), [everything, mine])
    lose_in_a_crash(reservation)

    assert settle(reservation, dollars("1.5"), log_row=log_row("lost-call", "1.5")) is True

    for budget in (everything, mine):
        assert (ledger(budget).spent, ledger(budget).reserved) == (dollars("1.5"), 0)
    recreated = Reservation.objects.get(request_id="lost-call")
    assert (recreated.status, recreated.actual) == (Reservation.Status.SETTLED, dollars("1.5"))
    assert OperationLog.objects.get(request_id="lost-call").cost == dollars("1.5")


def test_a_settlement_with_its_row_notifies_a_threshold_once(notices: Notices):
    budget = make_budget("10")
    first = reserve("first", dollars("6"), [budget])
    second = reserve("second", dollars("1"), [budget])

    settle(first, dollars("6"), log_row=log_row("first", "6"))
    settle(second, dollars("1"), log_row=log_row("second", "1"))

    day = ledger(budget).day.isoformat()
    assert notices.keys == [f"budget:{budget.pk}:{day}:50"]
    assert ledger(budget).thresholds_notified == [50]


def test_money_with_eighteen_places_is_settled_and_logged_exactly():
    budget = make_budget("10")
    cost = Decimal("0.000123456789012345")
    reservation = reserve("call", dollars("1"), [budget])

    settle(reservation, cost, log_row=log_row("call", str(cost)))

    assert ledger(budget).spent == cost
    assert OperationLog.objects.get(request_id="call").cost == cost
