"""Daily budgets: which budgets a call counts against, their calendar, their refusal,
and how far each one is used today.

A budget's day is a calendar day in `settings.TIME_ZONE`; each day has its own
`BudgetDay` ledger (limit, reserved, spent), so a new day starts fresh without any
reset job. Money is set aside on the ledgers before a call and settled after it
(`routing.reservations`); a reservation held past any call's length is written off
(`routing.stale_reservations`); reaching 50, 80 and 100% of a limit is notified once
a day (`routing.budget_notices`).

When the critical toggle `routing.budgets.enforced` is off, every reservation
succeeds and is still recorded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Q
from django.utils import timezone

from controlplane.models import toggle_enabled
from controlplane.money import ZERO, dollars, exact_text, usd
from controlplane.tiers import StaffUser
from routing import ledger as ledger_sql
from routing.models import Budget, BudgetDay

ENFORCED_TOGGLE = "routing.budgets.enforced"

# How full a budget looks, on every meter (a run's steps, wall clock and cost in chat,
# each daily budget on the routing page): amber from 60%, red above 85%.
AMBER_FROM = Decimal(60)
RED_ABOVE = Decimal(85)


def meter_state(percent: Decimal | float) -> str:
    """ "green", "amber" or "red" for a meter `percent` full."""
    if percent > RED_ABOVE:
        return "red"
    if percent >= AMBER_FROM:
        return "amber"
    return "green"


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
    user: StaffUser | None,
    operation: str = "",
    service: str = "",
    *,
    among: Iterable[Budget] | None = None,
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
    user_id = getattr(user, "pk", None)
    if user_id is not None:
        matches |= Q(scope=Budget.Scope.USER, user_id=user_id)
    if operation:
        matches |= Q(scope=Budget.Scope.OPERATION, operation=operation)
    if service:
        matches |= Q(scope=Budget.Scope.SERVICE, service=service)
    return list(Budget.objects.filter(matches, enabled=True).order_by("pk"))


def unique_budgets(budgets: Iterable[Budget]) -> list[Budget]:
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
    budgets = unique_budgets(budgets)
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


# Today's spend, for the dashboard and `bin/manage spend`.


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


def status_lines(user: StaffUser) -> list[str]:
    """The chat bots' `/status` section: today's spend against each enabled budget."""
    rows = spend_today()
    if not rows:
        return ["Spend today: no budgets set."]
    lines = ["Spend today:"]
    for row in sorted(rows, key=lambda r: r.percent or ZERO, reverse=True):
        percent = f" ({row.percent}%)" if row.percent is not None else ""
        lines.append(f"  {row.budget}: {usd(row.spent)} of {usd(row.limit)}{percent}")
    return lines
