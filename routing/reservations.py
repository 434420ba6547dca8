"""Reservations: money is set aside on a call's budgets before it and settled after it.

A reservation is one conditional UPDATE per ledger row
(`reserved + spent + amount <= limit`), all in one transaction: the database, not
Python, decides whether there is room, so concurrent calls can never take a budget
past its limit, and a refusal by one budget leaves nothing reserved on the others.
Ledger rows are always updated in primary-key order, so two transactions touching
the same rows cannot deadlock.

Settling records the actual cost in full, even past the limit (money that was
spent is never dropped); the budget then refuses the next reservation until the
day ends. When the critical toggle `routing.budgets.enforced` is off, every
reservation succeeds and is still recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from controlplane.money import ZERO
from controlplane.runtime import rows
from controlplane.runtime.transactions import transient
from controlplane.tiers import StaffUser
from routing import ledger as ledger_sql
from routing.budget_notices import notify_newly_reached
from routing.budgets import BudgetExceeded, budget_day, budgets_enforced, unique_budgets
from routing.models import Budget, BudgetDay, OperationLog, Reservation

log = logging.getLogger(__name__)


# Each budget's ledger id for a day, as last read by this process. Ledger rows are
# never deleted; the limit a ledger holds is set by every reservation (`ledger.hold`).
_known_ledgers: dict[tuple[int, date], int] = {}
KNOWN_LEDGERS_MAX = 10_000


def _ledgers(budgets: Sequence[Budget], day: date) -> list[BudgetDay]:
    """Each budget's ledger for `day`, created if missing, in primary-key order; its
    `limit` is the budget's daily limit now."""
    if not budgets:
        return []  # skips building a query that could only come back empty
    known = {budget.pk: _known_ledgers.get((budget.pk, day)) for budget in budgets}
    if None not in known.values():
        # As read before: no query.
        return sorted(
            (BudgetDay(pk=known[b.pk], budget=b, day=day, limit=b.daily_limit) for b in budgets),
            key=lambda row: row.pk,
        )
    found = {row.budget_id: row for row in BudgetDay.objects.filter(budget__in=budgets, day=day)}
    for budget in budgets:
        if budget.pk not in found:
            # get_or_create inserts in a savepoint and, when a concurrent call inserted
            # the same (budget, day) first, catches the IntegrityError of the unique
            # constraint and reads that row instead.
            found[budget.pk], _ = BudgetDay.objects.get_or_create(
                budget=budget, day=day, defaults={"limit": budget.daily_limit}
            )
    if len(_known_ledgers) > KNOWN_LEDGERS_MAX:
        _known_ledgers.clear()  # days gone by
    for budget in budgets:
        row = found[budget.pk]
        row.budget, row.limit = budget, budget.daily_limit
        if not connection.in_atomic_block:
            # Known committed (autocommit): a row that a rollback could take back
            # (and its id then be reused by another ledger) is never remembered.
            _known_ledgers[(budget.pk, day)] = row.pk
    return sorted(found.values(), key=lambda row: row.pk)


def reserve(
    request_id: str,
    amount: Decimal,
    budgets: Iterable[Budget],
    **options: Any,
) -> Reservation:
    """Set `amount` aside on every budget in `budgets` for the call `request_id`
    (`_reserve`). A ledger this process remembered that is gone from the table (a
    database restored, or emptied by a test, under a running process) refuses
    nothing: the process forgets what it remembered and reserves again from the
    table."""
    budgets = list(budgets)
    try:
        return _reserve(request_id, amount, budgets, **options)
    except BudgetDay.DoesNotExist:
        log.warning("a remembered budget ledger is gone; reading the ledgers again")
        _known_ledgers.clear()
        return _reserve(request_id, amount, budgets, **options)


def _reserve(
    request_id: str,
    amount: Decimal,
    budgets: Iterable[Budget],
    *,
    approved: bool = False,
    enforced: bool | None = None,
    operation: str = "",
    service: str = "",
    user: StaffUser | None = None,
) -> Reservation:
    """Set `amount` aside on every budget in `budgets` for the call `request_id`.

    All or nothing: raises `BudgetExceeded` (naming the first budget without room)
    and reserves nothing when any budget lacks room. `approved` is for a call an
    Owner approved past its budgets (approval rule 3): no limit is checked, and the
    reservation records that it was approved. `enforced` is the state of the toggle
    `routing.budgets.enforced` when the caller has read it already. `operation`,
    `service` and `user` say whose call it is, for the log row of a call whose
    outcome is never recorded (`write_off_stale_reservations`).
    """
    if amount < 0:
        raise ValueError(f"A reservation cannot be negative ({amount}).")
    budgets = unique_budgets(budgets)
    # Without budgets there is no limit to check: no need to read the toggle.
    checked = (
        bool(budgets) and not approved and (budgets_enforced() if enforced is None else enforced)
    )
    # Ledger rows are created before the reservation's transaction, so a refusal does
    # not undo them and concurrent first calls of the day do not queue behind each
    # other's whole reservation. Each hold brings its ledger's limit up to date.
    ledgers = _ledgers(budgets, budget_day())
    reservation = Reservation(
        request_id=request_id,
        amount=amount,
        approved=approved,
        operation=operation,
        service=service,
        user=user if getattr(user, "pk", None) else None,
    )
    # A hold for the length of one call: its commit need not wait for the disk (a
    # crash that loses it ends the call too); the settlement's commit does.
    if connection.vendor == "postgresql":
        # One statement: one round trip on the path of every call.
        refused = ledger_sql.reserve(
            reservation, ledgers, checked=checked, transient=not connection.in_atomic_block
        )
    else:
        refused = _reserve_statement_by_statement(reservation, ledgers, checked=checked)
    if refused is not None:
        log.info("budget refused %s: %s over %s", request_id, amount, refused.budget)
        raise _refusal(refused, amount)
    # settle() or release() of this very object then needs no query to find them.
    setattr(reservation, _LEDGER_IDS, [ledger.pk for ledger in ledgers])
    if not checked and budgets:
        log.info(
            "reserved %s for %s without a limit check (%s)",
            amount,
            request_id,
            "approved" if approved else "budgets not enforced",
        )
    return reservation


def _reserve_statement_by_statement(
    reservation: Reservation, ledgers: Sequence[BudgetDay], *, checked: bool
) -> BudgetDay | None:
    """`ledger.reserve` for the other databases, one statement at a time in one
    transaction. Returns the first ledger without room, or None once reserved."""
    with transient():
        for ledger in ledgers:
            if not ledger_sql.hold(ledger.pk, reservation.amount, ledger.limit, checked=checked):
                transaction.set_rollback(True)  # all or nothing: undo the holds made
                return ledger
        rows.insert([reservation])
        # A new reservation holds no ledger yet: one INSERT of its links.
        rows.insert(
            [
                Reservation.days.through(reservation_id=reservation.pk, budgetday_id=ledger.pk)
                for ledger in ledgers
            ]
        )
    return None


def _refusal(ledger: BudgetDay, amount: Decimal) -> BudgetExceeded:
    """The refusal of `amount` by `ledger`, with the ledger as it stands; the limit is
    the budget's now, which the ledger takes on even though this call is refused."""
    limit = ledger.limit
    ledger.refresh_from_db(fields=["reserved", "spent"])
    BudgetDay.objects.filter(pk=ledger.pk).exclude(limit=limit).update(limit=limit)
    ledger.limit = limit
    return BudgetExceeded(ledger.budget, ledger, amount)


# The ledgers a reservation holds money on, in primary-key order, as `reserve` made
# them: a reservation's ledgers never change once it is made.
_LEDGER_IDS = "_held_on_ledger_ids"


def _ledger_ids(reservation: Reservation) -> list[int]:
    known = getattr(reservation, _LEDGER_IDS, None)
    if known is not None:
        return list(known)
    return list(reservation.days.order_by("pk").values_list("pk", flat=True))


def settle(
    reservation: Reservation, actual: Decimal, *, log_row: OperationLog | None = None
) -> bool:
    """Record the call's actual cost in place of its reservation. Idempotent.

    The actual cost is recorded in full, even past a limit. A released reservation
    (its call failed) is still settled when money turns out to be spent after all.
    One the stale sweep wrote off is settled already. Returns whether this call did
    the settling. `log_row`: the call's new `OperationLog` row, inserted with the
    settlement, in one transaction (on PostgreSQL in one statement), whether or not
    this call did the settling.
    """
    if actual < 0:
        raise ValueError(f"A cost cannot be negative ({actual}).")
    if log_row is None:
        return _settle(reservation, actual)
    if connection.vendor != "postgresql":
        with transaction.atomic():
            settled = _settle(reservation, actual)
            rows.insert([log_row])
        return settled
    now = timezone.now()
    closed, ledgers = ledger_sql.settle_and_log(reservation.pk, actual, now, log_row)
    if not closed:
        # Settled already, or lost (its commit did not wait for the disk): the log row
        # is in; what is left is the rare path's, one statement at a time.
        return _settle(reservation, actual)
    notify_newly_reached(ledgers)
    return _mark_settled(reservation, actual, now)


def _mark_settled(reservation: Reservation, actual: Decimal, at: datetime) -> bool:
    reservation.status, reservation.actual, reservation.closed_at = (
        Reservation.Status.SETTLED,
        actual,
        at,
    )
    return True


def _settle(reservation: Reservation, actual: Decimal) -> bool:
    now = timezone.now()
    closed = {"status": Reservation.Status.SETTLED, "actual": actual, "closed_at": now}
    mine = Reservation.objects.filter(pk=reservation.pk)
    # No savepoint inside a caller's transaction (the call path settles and logs in
    # one): nothing in here raises to be caught, and a savepoint costs two round trips.
    with transaction.atomic(savepoint=False):
        was_held = ledger_sql.close(
            reservation.pk,
            Reservation.Status.HELD,
            to=Reservation.Status.SETTLED,
            actual=actual,
            at=now,
        )
        if not was_held and not mine.filter(status=Reservation.Status.RELEASED).update(**closed):
            if mine.exists():
                return False  # settled already
            # A database crash lost the reservation (its commit does not wait for the
            # disk): the money was spent all the same, so it is recorded in full.
            log.warning("settling %s without its lost reservation", reservation.request_id)
            # This object now stands for the new row: settling it again changes nothing.
            reservation.pk = Reservation.objects.create(
                request_id=reservation.request_id, amount=reservation.amount, **closed
            ).pk
        held = reservation.amount if was_held else ZERO
        notify_newly_reached(
            (ledger_id, *ledger_sql.spend(ledger_id, actual, held))
            for ledger_id in _ledger_ids(reservation)
        )
    return _mark_settled(reservation, actual, now)


def release(reservation: Reservation) -> bool:
    """Give a failed call's reservation back. Idempotent; returns whether it released."""
    now = timezone.now()
    with transaction.atomic(savepoint=False):  # as in settle()
        if not Reservation.objects.filter(pk=reservation.pk, status=Reservation.Status.HELD).update(
            status=Reservation.Status.RELEASED, closed_at=now
        ):
            return False
        for ledger_id in _ledger_ids(reservation):
            ledger_sql.unhold(ledger_id, reservation.amount)
    reservation.status, reservation.closed_at = Reservation.Status.RELEASED, now
    return True
