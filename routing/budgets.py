"""Daily budgets: money is reserved before a call and settled after it.

A budget's day is a calendar day in `settings.TIME_ZONE`; each day has its own
`BudgetDay` ledger (limit, reserved, spent), so a new day starts fresh without any
reset job. A reservation is one conditional UPDATE per ledger row
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
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from controlplane.models import toggle_enabled
from controlplane.notifications import notify
from controlplane.runtime import rows
from controlplane.runtime.transactions import transient
from routing import ledger as ledger_sql
from routing.models import Budget, BudgetDay, OperationLog, Reservation
from routing.money import ZERO

log = logging.getLogger(__name__)

ENFORCED_TOGGLE = "routing.budgets.enforced"
THRESHOLDS = (50, 80, 100)  # percent of the daily limit, each notified once a day
# A reservation still held after this long belongs to a call whose process stopped.
STALE_AFTER = timedelta(hours=1)
SWEEP_BATCH = 500


# The calendar.


def budget_day(at: datetime | None = None) -> date:
    """The budget day of `at` (default now): its date in the configured time zone."""
    return timezone.localtime(at or timezone.now(), timezone.get_default_timezone()).date()


def resets_at(day: date) -> datetime:
    """When `day` ends and its budgets start fresh: the next midnight, local time."""
    zone = timezone.get_default_timezone()
    return datetime.combine(day + timedelta(days=1), time.min, tzinfo=zone)


def budgets_enforced() -> bool:
    return toggle_enabled(ENFORCED_TOGGLE, default=True)


# Money as people read it.


def dollars(amount: Decimal) -> str:
    """`$10.00`, `$0.000075`: cents at least, every significant digit kept."""
    exact = amount.normalize()
    exponent = exact.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        exact = exact.quantize(Decimal("0.01"))
    return f"${exact:,f}"


def exact_text(amount: Decimal) -> str:
    """An amount for JSON: a string, so no digit is lost to a float."""
    return format(amount.normalize(), "f")


# Refusal.


class BudgetExceeded(Exception):
    """A call refused because it would take `budget` past its daily limit."""

    def __init__(self, budget: Budget, ledger: BudgetDay, amount: Decimal) -> None:
        self.budget = budget
        self.day = ledger.day
        self.limit = ledger.limit
        self.spent = ledger.spent
        self.reserved = ledger.reserved
        self.amount = amount
        self.resets_at = resets_at(ledger.day)
        in_flight = (
            f" and {dollars(self.reserved)} reserved by calls in flight" if self.reserved else ""
        )
        super().__init__(
            f"The {budget} is used up for {self.day.isoformat()}: its daily limit is "
            f"{dollars(self.limit)}, {dollars(self.spent)} is spent{in_flight}, and this "
            f"call needs an estimated {dollars(amount)}. "
            f"It resets at {self.resets_at.isoformat()}."
        )

    @property
    def retry_after_seconds(self) -> int:
        """Whole seconds until the reset, for a `Retry-After` header."""
        return max(int((self.resets_at - timezone.now()).total_seconds()) + 1, 1)

    def details(self) -> dict[str, Any]:
        """JSON-safe facts for the gateway's 429 answer."""
        return {
            "budget": str(self.budget),
            "budget_id": self.budget.pk,
            "scope": self.budget.scope,
            "limit": exact_text(self.limit),
            "spent": exact_text(self.spent),
            "reserved": exact_text(self.reserved),
            "requested": exact_text(self.amount),
            "day": self.day.isoformat(),
            "resets_at": self.resets_at.isoformat(),
            "retry_after": self.retry_after_seconds,
        }


# Which budgets apply.


def applicable_budgets(
    user: Any, operation: str = "", service: str = "", *, among: Iterable[Budget] | None = None
) -> list[Budget]:
    """The enabled budgets a call by `user` for `operation` from `service` counts against.

    `among`: the enabled budgets already in memory (the routing table), to pick from
    without a query.
    """
    if among is not None:
        user_id = getattr(user, "pk", None)
        return sorted(
            (
                b
                for b in among
                if b.enabled
                and (
                    b.scope == Budget.Scope.GLOBAL
                    or (
                        b.scope == Budget.Scope.USER
                        and user_id is not None
                        and b.user_id == user_id
                    )
                    or (
                        b.scope == Budget.Scope.OPERATION and operation and b.operation == operation
                    )
                    or (b.scope == Budget.Scope.SERVICE and service and b.service == service)
                )
            ),
            key=lambda b: b.pk,
        )
    matches = Q(scope=Budget.Scope.GLOBAL)
    if getattr(user, "pk", None) is not None:
        matches |= Q(scope=Budget.Scope.USER, user_id=user.pk)
    if operation:
        matches |= Q(scope=Budget.Scope.OPERATION, operation=operation)
    if service:
        matches |= Q(scope=Budget.Scope.SERVICE, service=service)
    return list(Budget.objects.filter(matches, enabled=True).order_by("pk"))


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


def _unique(budgets: Iterable[Budget]) -> list[Budget]:
    return sorted({budget.pk: budget for budget in budgets}.values(), key=lambda b: b.pk)


def would_exceed(
    budgets: Iterable[Budget], amount: Decimal, *, enforced: bool | None = None
) -> Budget | None:
    """The first budget that `amount` more would take past its limit today, if any.

    A read for approval rule 3; nothing is reserved. None also when budgets are
    not enforced, since asking for an approval is a way of enforcing them, and when
    a budget the call needs is already used up: an approval lets one call go past a
    limit, it does not reopen a spent budget, so `reserve` refuses that call naming
    the budget (as the 100% notice says: calls that need more are refused).
    `enforced` is the toggle's state when the caller has read it already.
    """
    budgets = _unique(budgets)
    if not budgets or not (budgets_enforced() if enforced is None else enforced):
        return None
    held = ledger_sql.committed([budget.pk for budget in budgets], budget_day())
    in_the_way = None
    for budget in budgets:
        committed = held.get(budget.pk, ZERO)
        if committed + amount > budget.daily_limit:
            if committed >= budget.daily_limit:
                return None
            in_the_way = in_the_way or budget
    return in_the_way


# Reserve, settle, release.


def reserve(
    request_id: str,
    amount: Decimal,
    budgets: Iterable[Budget],
    *,
    approved: bool = False,
    enforced: bool | None = None,
    operation: str = "",
    service: str = "",
    user: Any = None,
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
    budgets = _unique(budgets)
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
    _notify_newly_reached(ledgers)
    return _mark_settled(reservation, actual, now)


def _notify_newly_reached(ledgers: Iterable[tuple[int, Decimal, Decimal, list[int]]]) -> None:
    """Of ledgers as a settlement left them (id, spent, limit, thresholds notified),
    notify those that reached a threshold not yet notified."""
    crossed = [
        ledger_id
        for ledger_id, spent, limit, notified in ledgers
        if any(t not in notified for t in _thresholds_reached(spent, limit))
    ]
    if crossed:
        _notify_thresholds(crossed)


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
        _notify_newly_reached(
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
            BudgetDay.objects.filter(pk=ledger_id).update(
                reserved=F("reserved") - reservation.amount
            )
    reservation.status, reservation.closed_at = Reservation.Status.RELEASED, now
    return True


WRITE_OFF_ERROR = (
    "The call's outcome was never recorded (the process serving it stopped): charged "
    "at its reservation, the most it was allowed to cost."
)


def write_off_stale_reservations(older_than: timedelta = STALE_AFTER) -> int:
    """Periodic sweep: a reservation held longer than any call lasts belongs to a
    call whose process stopped before recording it (mid-call, or after answering).
    The provider may well have charged for it, so the money is not given back: the
    reservation is settled at its amount and the call gets its log row, marked as
    charged at its reservation. Returns how many were written off."""
    cutoff = timezone.now() - older_than
    stale = Reservation.objects.filter(status=Reservation.Status.HELD, created_at__lt=cutoff)
    written_off = 0
    for reservation in stale.order_by("pk")[:SWEEP_BATCH]:
        with transaction.atomic():
            if not settle(reservation, reservation.amount):
                continue  # recorded meanwhile
            OperationLog.objects.create(
                request_id=reservation.request_id,
                operation=reservation.operation,
                service=reservation.service,
                user_id=reservation.user_id,
                cost=reservation.amount,
                cost_source=OperationLog.CostSource.RESERVED,
                status=OperationLog.Status.ERROR,
                error=WRITE_OFF_ERROR,
            )
        written_off += 1
        log.warning(
            "wrote off the stale reservation %s (%s), held since %s",
            reservation.request_id,
            reservation.amount,
            reservation.created_at.isoformat(),
        )
    return written_off


# Threshold notifications.


def _crossed(ledger: BudgetDay) -> list[int]:
    return _thresholds_reached(ledger.spent, ledger.limit)


def _thresholds_reached(spent: Decimal, limit: Decimal) -> list[int]:
    if spent <= 0:
        return []
    return [t for t in THRESHOLDS if spent * 100 >= limit * t]


def _notify_thresholds(ledger_ids: Sequence[int]) -> None:
    """Claim the thresholds newly crossed on each ledger and notify the highest.

    The claim is a compare-and-swap on `thresholds_notified`, so of two settlements
    crossing the same threshold at once only one notifies.
    """
    for ledger in BudgetDay.objects.filter(pk__in=ledger_ids).select_related("budget__user"):
        for _attempt in range(5):
            notified = list(ledger.thresholds_notified)
            new = [t for t in _crossed(ledger) if t not in notified]
            if not new:
                break
            claimed = BudgetDay.objects.filter(pk=ledger.pk, thresholds_notified=notified).update(
                thresholds_notified=sorted(notified + new)
            )
            if claimed:
                _send_threshold_notice(ledger, max(new))
                break
            ledger.refresh_from_db(fields=["spent", "limit", "thresholds_notified"])


def _send_threshold_notice(ledger: BudgetDay, threshold: int) -> None:
    budget, day = ledger.budget, ledger.day
    subject = f"The {budget} reached {threshold}% of its daily limit"
    body = (
        f"{dollars(ledger.spent)} of {dollars(ledger.limit)} spent on {day.isoformat()} "
        f"({timezone.get_default_timezone_name()}). "
        + ("Calls that need more are refused until it resets" if threshold >= 100 else "It resets")
        + f" at {resets_at(day).isoformat()}."
    )
    key = f"budget:{budget.pk}:{day.isoformat()}:{threshold}"
    # After commit: a settlement that rolls back must not have notified.
    transaction.on_commit(lambda: notify(subject, body, dedupe_key=key))


# Today's spend, for the dashboard and `manage.py spend`.


@dataclass(frozen=True)
class BudgetSpend:
    budget: Budget
    day: date
    limit: Decimal
    spent: Decimal
    reserved: Decimal

    @property
    def remaining(self) -> Decimal:
        return max(self.limit - self.spent - self.reserved, ZERO)

    @property
    def percent(self) -> Decimal | None:
        """Spent as a percentage of the limit; None for a zero limit."""
        if not self.limit:
            return None
        return (self.spent * 100 / self.limit).quantize(Decimal("0.1"))


def spend_on(day: date) -> list[BudgetSpend]:
    """Each enabled budget's spend on `day`, under the limit that applies now."""
    budgets = list(Budget.objects.filter(enabled=True).select_related("user"))
    ledgers = {row.budget_id: row for row in BudgetDay.objects.filter(day=day)}
    rows = []
    for budget in budgets:
        ledger = ledgers.get(budget.pk)
        rows.append(
            BudgetSpend(
                budget=budget,
                day=day,
                limit=budget.daily_limit,
                spent=ledger.spent if ledger else ZERO,
                reserved=ledger.reserved if ledger else ZERO,
            )
        )
    return rows


def spend_today() -> list[BudgetSpend]:
    return spend_on(budget_day())
