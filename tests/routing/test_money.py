"""Money is exact on both databases: stored, summed, compared and reserved to the last
of its 18 places (on SQLite as canonical text computed with Decimals)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection

from controlplane.money import MoneySum
from routing.budgets import BudgetExceeded, budget_day
from routing.models import Budget, BudgetDay, OperationLog
from routing.reservations import reserve

PER_TOKEN = Decimal("0.000000075123456789")


@pytest.mark.django_db
def test_it_sums_many_per_token_costs_exactly_to_the_last_place():
    OperationLog.objects.bulk_create(
        OperationLog(request_id=f"call-{n}", operation="chat", cost=PER_TOKEN * n)
        for n in range(1, 1001)
    )

    total = OperationLog.objects.aggregate(total=MoneySum("cost"))["total"]

    assert total == PER_TOKEN * (1000 * 1001 // 2) == Decimal("0.037599290122894500")
    assert type(total) is Decimal


@pytest.mark.django_db
def test_it_sums_nothing_to_none_as_sum_does():
    assert OperationLog.objects.aggregate(total=MoneySum("cost"))["total"] is None


@pytest.mark.django_db
def test_it_orders_and_filters_money_by_amount_not_by_its_text():
    for request_id, cost in (("ten", "10"), ("nine", "9"), ("tiny", "0.000000000000000001")):
        OperationLog.objects.create(request_id=request_id, operation="chat", cost=Decimal(cost))

    by_cost = OperationLog.objects.order_by("cost").values_list("request_id", flat=True)
    over_one = OperationLog.objects.filter(cost__gt=Decimal(1)).order_by("-cost")

    assert list(by_cost) == ["tiny", "nine", "ten"]
    assert [row.request_id for row in over_one] == ["ten", "nine"]


@pytest.mark.django_db
def test_it_stores_eighteen_places_to_the_last_digit():
    amount = Decimal("123456789012.123456789012345678")
    OperationLog.objects.create(request_id="big", operation="chat", cost=amount)

    assert OperationLog.objects.get(request_id="big").cost == amount


@pytest.mark.django_db
def test_a_ledger_reaching_its_limit_to_the_last_digit_refuses_exactly():
    budget = Budget.objects.create(
        scope=Budget.Scope.GLOBAL, daily_limit=Decimal("1.000000000000000001")
    )
    reserve("most", Decimal("1"), [budget])
    reserve("last-digit", Decimal("0.000000000000000001"), [budget])

    with pytest.raises(BudgetExceeded):
        reserve("one-more", Decimal("0.000000000000000001"), [budget])

    ledger = BudgetDay.objects.get(budget=budget, day=budget_day())
    assert ledger.reserved == Decimal("1.000000000000000001") == ledger.limit


@pytest.mark.django_db
def test_sqlite_keeps_money_as_canonical_text():
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL keeps money as numeric")
    OperationLog.objects.create(request_id="call", operation="chat", cost=Decimal("0.5"))

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT cost FROM {OperationLog._meta.db_table}")  # noqa: S608
        assert cursor.fetchone() == ("000000000000.500000000000000000",)
