"""The budget ledger's statements on the path of every AI call, as plain SQL.

A reservation and its settlement are a handful of one-row statements; through the
ORM each costs about half a millisecond of Python to build and compile here, more
than the statement itself. These are the same conditional UPDATEs `budgets`
documents (the database decides whether there is room), written once. Money is
passed as `Decimal` and computed by the database (exact `numeric` on PostgreSQL).
Table names come from the models; every value is a parameter. SQLite keeps money
as text and computes it with the Decimal functions of `controlplane.money` (`money_add`,
`money_sub`, `money_cmp`), so the statements below are written per database.

On PostgreSQL, where each statement is a round trip over the network, a call's
reservation (`reserve`) and its settlement with its log row (`settle_and_log`) are
one statement each, built of data-modifying CTEs: all or nothing without a
transaction of their own, and the ledger rows' locks held no longer than that one
statement (every call on a budget queues on its ledger row). SQLite, in-process,
runs the one-row statements (`hold`, `close`, `spend`) in a transaction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from functools import cache
from typing import Any

from django.db import connection

from controlplane.runtime import rows
from controlplane.runtime.prepared import server_bound_cursor
from routing.models import BudgetDay, OperationLog, Reservation

_LEDGER = BudgetDay._meta.db_table
_RESERVATION = Reservation._meta.db_table
_LINKS = Reservation.days.through


@cache
def _arithmetic(vendor: str) -> tuple[str, str, str, str]:
    """How `vendor` adds, subtracts, compares (`>=`) and takes in money: on SQLite
    through Decimal functions on the stored text, elsewhere with the database's own
    exact numbers. Templates of two operands, `{0}` and `{1}`."""
    if vendor == "sqlite":
        return (
            "money_add({0}, {1})",
            "money_sub({0}, {1})",
            "money_cmp({0}, {1}) >= 0",
            "money({0})",
        )
    return "{0} + {1}", "{0} - {1}", "{0} >= {1}", "{0}"


@cache
def _hold_sql(vendor: str, checked: bool) -> str:
    add, _sub, at_least, money = _arithmetic(vendor)
    sql = (
        f"UPDATE {_LEDGER} SET reserved = {add.format('reserved', '%s')}, "  # noqa: S608
        f'"limit" = {money.format("%s")} WHERE id = %s'
    )
    if checked:
        sql += " AND " + at_least.format("%s", add.format(add.format("reserved", "spent"), "%s"))
    return sql


def hold(ledger_id: int, amount: Decimal, limit: Decimal, *, checked: bool) -> bool:
    """Reserve `amount` on a ledger; when `checked`, only if it stays within `limit`,
    the budget's daily limit now, which the ledger takes on in the same statement (an
    Owner's change applies from the next call on). Returns whether it did."""
    params: list[Any] = [amount, limit, ledger_id]
    if checked:
        params += [limit, amount]
    with connection.cursor() as cursor:
        cursor.execute(_hold_sql(connection.vendor, checked), params)
        return cursor.rowcount == 1


@cache
def _reserve_sql(transient: bool) -> str:
    reservation = rows.statement(Reservation)
    field = Reservation._meta.get_field("days")
    links_to_reservation = field.m2m_column_name()
    links_to_ledger = field.m2m_reverse_name()
    # Whether the commit waits for the disk: as `controlplane.runtime.transactions.transient`.
    sync = "set_config('synchronous_commit', 'off', true)" if transient else "''"
    # Names from the models' metadata; every value is a parameter.
    return f"""
WITH wanted (id, new_limit) AS (
    SELECT * FROM unnest(%s::bigint[], %s::numeric[])
), locked AS (
    SELECT l.id, w.new_limit >= l.reserved + l.spent + %s AS room
    FROM {_LEDGER} l JOIN wanted w ON w.id = l.id
    ORDER BY l.id
    FOR UPDATE OF l
), decided AS (
    SELECT count(*) = %s AND (NOT %s OR coalesce(bool_and(room), true)) AS fits FROM locked
), held AS (
    UPDATE {_LEDGER} l SET reserved = l.reserved + %s, "limit" = w.new_limit
    FROM wanted w, decided
    WHERE l.id = w.id AND decided.fits
    RETURNING l.id
), made AS (
    INSERT INTO {reservation.table} ({reservation.columns})
    SELECT {reservation.placeholders[1:-1]} FROM decided WHERE decided.fits
    RETURNING {reservation.pk}
), linked AS (
    INSERT INTO {_LINKS._meta.db_table} ({links_to_reservation}, {links_to_ledger})
    SELECT made.{reservation.pk}, held.id FROM made, held
)
SELECT (SELECT {reservation.pk} FROM made),
       ARRAY(SELECT id FROM locked WHERE NOT room ORDER BY id),
       {sync}
"""  # noqa: S608


def reserve(
    reservation: Reservation, ledgers: Sequence[BudgetDay], *, checked: bool, transient: bool
) -> BudgetDay | None:
    """PostgreSQL: hold `reservation.amount` on every ledger and insert the reservation
    with its links, all in one statement, so in one round trip and all or nothing
    without a transaction of its own. The ledgers are locked in primary-key order and
    checked (when `checked`) before any is changed: either each has room and each
    holds, or none changes. Each ledger takes on its `limit`, the budget's limit now.
    `transient`: the commit need not wait for the disk (outside a caller's transaction).

    Returns None once reserved (the reservation then has its pk), else the first
    ledger without room, in primary-key order.
    """
    amount = reservation.amount
    params = [
        [ledger.pk for ledger in ledgers],
        [ledger.limit for ledger in ledgers],
        amount,
        len(ledgers),
        checked,
        amount,
        *rows.statement(Reservation).values(reservation, connection),
    ]
    with server_bound_cursor() as cursor:
        cursor.execute(_reserve_sql(transient), params)
        made, refused, _ = cursor.fetchone()
    if made is not None:
        rows.saved(reservation, made)
        return None
    if not refused:
        raise BudgetDay.DoesNotExist(f"A ledger of {[ledger.pk for ledger in ledgers]} is gone.")
    return next(ledger for ledger in ledgers if ledger.pk == refused[0])


@cache
def _settle_sql() -> str:
    log = rows.statement(OperationLog)
    field = Reservation._meta.get_field("days")
    links = _LINKS._meta.db_table
    # Names from the models' metadata; every value is a parameter.
    return f"""
WITH mine AS (
    SELECT id, status, amount FROM {_RESERVATION}
    WHERE id = %s AND status IN (%s, %s)
    FOR UPDATE
), closed AS (
    UPDATE {_RESERVATION} r SET status = %s, actual = %s, closed_at = %s
    FROM mine WHERE r.id = mine.id
    RETURNING mine.status AS was, CASE WHEN mine.status = %s THEN mine.amount ELSE 0 END AS held
), locked AS (
    SELECT l.id FROM {_LEDGER} l
    WHERE l.id IN (
        SELECT {field.m2m_reverse_name()} FROM {links} WHERE {field.m2m_column_name()} = %s
    ) AND EXISTS (SELECT 1 FROM closed)
    ORDER BY l.id
    FOR UPDATE OF l
), spent AS (
    UPDATE {_LEDGER} l SET spent = l.spent + %s, reserved = l.reserved - closed.held
    FROM closed, locked WHERE l.id = locked.id
    RETURNING l.id, l.spent, l."limit", l.thresholds_notified
), logged AS (
    INSERT INTO {log.table} ({log.columns}) VALUES {log.placeholders} RETURNING {log.pk}
)
SELECT (SELECT was FROM closed),
       (SELECT {log.pk} FROM logged),
       ARRAY(SELECT ARRAY[id::text, spent::text, "limit"::text, thresholds_notified::text]
             FROM spent ORDER BY id)
"""  # noqa: S608


def settle_and_log(
    reservation_id: int, actual: Decimal, at: datetime, row: OperationLog
) -> tuple[bool, list[tuple[int, Decimal, Decimal, list[int]]]]:
    """PostgreSQL: settle a held (or released) reservation at `actual` and insert the
    call's log `row`, in one statement: one round trip, one commit, the ledgers and the
    log never apart. The ledgers are locked in primary-key order. Returns whether the
    reservation was closed here, and each ledger's id, spent, limit and thresholds
    already notified, as they are after it. When it was not (settled already, or lost), the
    ledgers are untouched and the log row is inserted all the same."""
    params = [
        reservation_id,
        Reservation.Status.HELD,
        Reservation.Status.RELEASED,
        Reservation.Status.SETTLED,
        actual,
        at,
        Reservation.Status.HELD,
        reservation_id,
        actual,
        *rows.statement(OperationLog).values(row, connection),
    ]
    with server_bound_cursor() as cursor:
        cursor.execute(_settle_sql(), params)
        was, log_id, ledgers = cursor.fetchone()
    rows.saved(row, log_id)
    return was is not None, [
        (int(ledger_id), Decimal(spent), Decimal(limit), list(json.loads(notified) or []))
        for ledger_id, spent, limit, notified in ledgers
    ]


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


@cache
def _spend_sql(vendor: str) -> str:
    add, sub, _at_least, _money = _arithmetic(vendor)
    return (
        f"UPDATE {_LEDGER} SET spent = {add.format('spent', '%s')}, "  # noqa: S608
        f"reserved = {sub.format('reserved', '%s')} "
        'WHERE id = %s RETURNING spent, "limit", thresholds_notified'
    )


def spend(ledger_id: int, actual: Decimal, held: Decimal) -> tuple[Decimal, Decimal, list[int]]:
    """Move a settled call's money from reserved to spent; returns the ledger's
    spent, limit and thresholds already notified, as they are after the change."""
    with connection.cursor() as cursor:
        cursor.execute(_spend_sql(connection.vendor), [actual, held, ledger_id])
        spent, limit, notified = cursor.fetchone()
    if isinstance(notified, str):
        notified = json.loads(notified)
    return _exact(spent), _exact(limit), list(notified or [])


def unhold(ledger_id: int, amount: Decimal) -> None:
    """Give back `amount` a released reservation held on a ledger."""
    sub = _arithmetic(connection.vendor)[1]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_LEDGER} SET reserved = {sub.format('reserved', '%s')} WHERE id = %s",  # noqa: S608
            [amount, ledger_id],
        )


def close(reservation_id: int, status: str, *, to: str, actual: Decimal, at: datetime) -> bool:
    """Close a reservation that is in `status`; returns whether it was."""
    money = _arithmetic(connection.vendor)[3]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_RESERVATION} SET status = %s, actual = {money.format('%s')}, "  # noqa: S608
            "closed_at = %s WHERE id = %s AND status = %s",
            [to, actual, connection.ops.adapt_datetimefield_value(at), reservation_id, status],
        )
        return cursor.rowcount == 1


def _exact(value: Any) -> Decimal:
    # SQLite hands back money's stored text.
    return value if isinstance(value, Decimal) else Decimal(value)
