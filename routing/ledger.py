"""The budget ledger's statements on the path of every AI call, as plain SQL.

A reservation and its settlement are a handful of one-row statements; through the
ORM each costs about half a millisecond of Python to build and compile here, more
than the statement itself. These are the same conditional UPDATEs `budgets`
documents (the database decides whether there is room), written once. Money is
passed as `Decimal` and computed by the database (exact `numeric` on PostgreSQL).
Table names come from the models; every value is a parameter.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db import connection

from routing.models import BudgetDay, Reservation

_LEDGER = BudgetDay._meta.db_table
_RESERVATION = Reservation._meta.db_table


def hold(ledger_id: int, amount: Decimal, limit: Decimal, *, checked: bool) -> bool:
    """Reserve `amount` on a ledger; when `checked`, only if it stays within `limit`,
    the budget's daily limit now, which the ledger takes on in the same statement (an
    Owner's change applies from the next call on). Returns whether it did."""
    sql = f'UPDATE {_LEDGER} SET reserved = reserved + %s, "limit" = %s WHERE id = %s'  # noqa: S608
    params: list[Any] = [amount, limit, ledger_id]
    if checked:
        # CAST: on SQLite a bare parameter is text, and text compares above numbers.
        sql += " AND CAST(%s AS NUMERIC) >= reserved + spent + %s"
        params += [limit, amount]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount == 1


def committed(budget_ids: list[int], day: date) -> dict[int, Decimal]:
    """What each budget has reserved and spent on `day` (budgets without a ledger
    for that day have none)."""
    marks = ", ".join(["%s"] * len(budget_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT budget_id, reserved, spent FROM {_LEDGER} "  # noqa: S608
            f"WHERE day = %s AND budget_id IN ({marks})",
            [connection.ops.adapt_datefield_value(day), *budget_ids],
        )
        return {budget: _exact(reserved) + _exact(spent) for budget, reserved, spent in cursor}


def spend(ledger_id: int, actual: Decimal, held: Decimal) -> tuple[Decimal, Decimal, list[int]]:
    """Move a settled call's money from reserved to spent; returns the ledger's
    spent, limit and thresholds already notified, as they are after the change."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_LEDGER} SET spent = spent + %s, reserved = reserved - %s "  # noqa: S608
            'WHERE id = %s RETURNING spent, "limit", thresholds_notified',
            [actual, held, ledger_id],
        )
        spent, limit, notified = cursor.fetchone()
    if isinstance(notified, str):
        notified = json.loads(notified)
    return _exact(spent), _exact(limit), list(notified or [])


def close(reservation_id: int, status: str, *, to: str, actual: Decimal, at: datetime) -> bool:
    """Close a reservation that is in `status`; returns whether it was."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_RESERVATION} SET status = %s, actual = %s, closed_at = %s "  # noqa: S608
            "WHERE id = %s AND status = %s",
            [to, actual, connection.ops.adapt_datetimefield_value(at), reservation_id, status],
        )
        return cursor.rowcount == 1


def _exact(value: Any) -> Decimal:
    # SQLite hands back a float (money is REAL there): through its repr.
    return value if isinstance(value, Decimal) else Decimal(str(value))
