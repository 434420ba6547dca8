"""Home's money: today's spend against each budget, coloured at the thresholds the
budget notices use (50, 80 and 100% of the daily limit), and the last hour's gateway
calls by outcome with the newest refusals. Every recorded call announces itself on
Home's group (`routing.call_records`), coalesced to one announcement a second."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, Sum
from django.utils import timezone

from controlplane.home.cards import for_everyone, register_home_card
from controlplane.money import ZERO
from routing.budget_notices import THRESHOLDS
from routing.budgets import BudgetSpend, spend_today
from routing.models import OperationLog

CALL_WINDOW = timedelta(hours=1)
REFUSALS_LIMIT = 5


@dataclass(frozen=True)
class BudgetMeter:
    """A budget's spend today, with the highest notice threshold it reached (0: none)."""

    spend: BudgetSpend
    threshold: int

    @property
    def percent(self) -> Decimal:
        return self.spend.percent or ZERO


def threshold_reached(spend: BudgetSpend) -> int:
    """The highest of THRESHOLDS the spend reached (reserved money counts: it is
    about to be spent), 0 below the first; a zero limit is reached at once."""
    used = spend.spent + spend.reserved
    if not spend.limit:
        return THRESHOLDS[-1] if used > 0 else 0
    return max((t for t in THRESHOLDS if used * 100 >= spend.limit * t), default=0)


def budget_meters() -> list[BudgetMeter]:
    """Fullest first: the budget about to stop calls is the one to see."""
    meters = [BudgetMeter(row, threshold_reached(row)) for row in spend_today()]
    return sorted(meters, key=lambda m: (m.threshold, m.percent), reverse=True)


def recent_calls(now: datetime) -> dict[str, Any]:
    """The last hour's calls by status and their cost (one query), and the newest
    refusals with why (one more)."""
    since = now - CALL_WINDOW
    calls = OperationLog.objects.filter(at__gte=since)
    totals = calls.aggregate(
        total=Count("id"),
        cost=Sum("cost"),
        **{status: Count("id", filter=Q(status=status)) for status in OperationLog.Status.values},
    )
    refusals = calls.filter(status=OperationLog.Status.REFUSED).order_by("-at", "-id")
    return {
        "total": totals.pop("total"),
        "cost": totals.pop("cost") or ZERO,
        "by_status": [
            {"status": status, "label": label, "count": totals[status]}
            for status, label in OperationLog.Status.choices
        ],
        "refusals": list(refusals[:REFUSALS_LIMIT]),
    }


def spend_context(now: datetime | None = None) -> dict[str, Any]:
    return {
        "budget_meters": budget_meters(),
        "thresholds": THRESHOLDS,
        "calls": recent_calls(now or timezone.now()),
    }


def register() -> None:
    """Called once from the app's ready()."""
    register_home_card(
        "spend",
        "routing/partials/home_spend.html",
        for_everyone(spend_context),
        order=30,
        events=("home.spend",),
        ages=True,
    )
