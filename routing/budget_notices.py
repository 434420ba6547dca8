"""Threshold notices: a budget reaching 50, 80 and 100% of its daily limit is
notified once for each threshold on each day, after the settlement that reached it
commits."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from controlplane.money import usd
from controlplane.notifications import notify
from routing.budgets import resets_at
from routing.models import BudgetDay

THRESHOLDS = (50, 80, 100)  # percent of the daily limit, each notified once a day


def notify_newly_reached(ledgers: Iterable[tuple[int, Decimal, Decimal, list[int]]]) -> None:
    """Of ledgers as a settlement left them (id, spent, limit, thresholds notified),
    notify those that reached a threshold not yet notified."""
    crossed = [
        ledger_id
        for ledger_id, spent, limit, notified in ledgers
        if any(t not in notified for t in _thresholds_reached(spent, limit))
    ]
    if crossed:
        _notify_thresholds(crossed)


def _crossed(ledger: BudgetDay) -> list[int]:
    return _thresholds_reached(ledger.spent, ledger.limit)


def _thresholds_reached(spent: Decimal, limit: Decimal) -> list[int]:
    if spent <= 0:
        return []
    return [t for t in THRESHOLDS if spent * 100 >= limit * t]


def _notify_thresholds(ledger_ids: Sequence[int]) -> None:
    """Claim the thresholds newly crossed on each ledger and notify each of them: a
    settlement that takes a budget from 40% to 100% is still its 50% and 80% notice
    (a channel or a person may listen for one threshold only).

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
                for threshold in sorted(new):
                    _send_threshold_notice(ledger, threshold)
                break
            ledger.refresh_from_db(fields=["spent", "limit", "thresholds_notified"])


def _send_threshold_notice(ledger: BudgetDay, threshold: int) -> None:
    budget, day = ledger.budget, ledger.day
    subject = f"The {budget} reached {threshold}% of its daily limit"
    body = (
        f"{usd(ledger.spent)} of {usd(ledger.limit)} spent on {day.isoformat()} "
        f"({timezone.get_default_timezone_name()}). "
        + ("Calls that need more are refused until it resets" if threshold >= 100 else "It resets")
        + f" at {resets_at(day).isoformat()}."
    )
    key = f"budget:{budget.pk}:{day.isoformat()}:{threshold}"
    # After commit: a settlement that rolls back must not have notified.
    transaction.on_commit(lambda: notify(subject, body, dedupe_key=key))
