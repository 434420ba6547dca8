"""`controlplane.runtime.rows.insert`: one INSERT ... RETURNING built once per model and row
count, storing what `save()` would have stored.

OperationLog is the model under test: it has every kind of field the statement must
get right (an `auto_now_add` datetime, 18-place money, JSON, a nullable foreign key,
booleans), and `rows.insert` writes it on every call's path (`routing.calls`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from controlplane.models.audit import AppendOnlyError
from controlplane.runtime import rows
from routing.models import OperationLog

# Every digit a money column holds: 12 before the point, 18 after.
WIDEST_MONEY = Decimal("123456789012.123456789012345678")


def a_call(request_id: str, user: Any = None, **changes: Any) -> OperationLog:
    """An OperationLog, not yet saved, with no field left at its default."""
    fields: dict[str, Any] = {
        "request_id": request_id,
        "operation": "summarize-logs",
        "mode": "balanced",
        "user": user,
        "service": "billing",
        "model_requested": "test/dear",
        "model_used": "test/cheap",
        "provider": "local",
        "fallback_used": True,
        "ab_variant": False,
        "stream": True,
        "prompt_tokens": 1200,
        "completion_tokens": 345,
        "cached_tokens": 1000,
        "cache_write_tokens": 7,
        "reasoning_tokens": 12,
        "cost": Decimal("0.000000000000000075"),
        "cost_source": OperationLog.CostSource.PROVIDER,
        "latency_ms": 812,
        "status": OperationLog.Status.OK,
        "error": "",
        "attempts": [
            {"model": "test/dear", "outcome": "error", "detail": "429 — slow down ✋"},
            {"model": "test/cheap", "outcome": "ok", "cost": "0.000000000000000075", "n": None},
        ],
    }
    fields.update(changes)
    return OperationLog(**fields)


def as_stored(row: OperationLog) -> dict[str, str]:
    """Every concrete column of the row as the ORM reads it back, but its pk and time."""
    reloaded = OperationLog.objects.get(pk=row.pk)
    return {
        field.attname: repr(getattr(reloaded, field.attname))
        for field in OperationLog._meta.concrete_fields
        if field.attname not in {"id", "at"}
    }


def vars_of(row: OperationLog) -> dict[str, Any]:
    """The field values of an unsaved row, to create the same one through the ORM."""
    return {
        field.attname: getattr(row, field.attname)
        for field in OperationLog._meta.concrete_fields
        if not field.primary_key
    }


@pytest.mark.django_db
@pytest.mark.parametrize("with_user", [True, False], ids=["a-user", "no-user"])
def test_an_inserted_row_reads_back_exactly_like_the_same_row_saved_by_the_orm(operator, with_user):
    user = operator if with_user else None
    saved = OperationLog.objects.create(**vars_of(a_call("by-the-orm", user)))
    inserted = a_call("by-rows-insert", user)

    rows.insert([inserted])

    expected = as_stored(saved) | {"request_id": repr("by-rows-insert")}
    assert as_stored(inserted) == expected
    assert as_stored(inserted)["user_id"] == repr(operator.pk if with_user else None)


@pytest.mark.django_db
def test_an_inserted_row_is_stamped_with_the_time_it_was_inserted():
    before = timezone.now()
    row = a_call("timed")

    rows.insert([row])

    assert before <= row.at <= timezone.now()
    assert OperationLog.objects.get(pk=row.pk).at == row.at


@pytest.mark.django_db
def test_defaults_are_stored_for_the_fields_left_unset():
    row = OperationLog(request_id="bare", operation="chat", cost_source="none", status="ok")

    rows.insert([row])

    stored = OperationLog.objects.get(pk=row.pk)
    assert (stored.cost, stored.attempts, stored.fallback_used) == (Decimal(0), [], False)
    assert stored.user_id is None


@pytest.mark.django_db
def test_several_rows_in_one_statement_each_get_their_own_pk_in_order():
    calls = [a_call(f"call-{n}", cost=Decimal(n)) for n in range(3)]

    with CaptureQueriesContext(connection) as inserting:
        rows.insert(calls)

    assert len(inserting.captured_queries) == 1
    pks = [row.pk for row in calls]
    assert None not in pks
    assert pks == sorted(set(pks))
    for n, row in enumerate(calls):
        stored = OperationLog.objects.get(pk=row.pk)
        assert (stored.request_id, stored.cost) == (f"call-{n}", Decimal(n))


@pytest.mark.django_db
def test_statements_for_different_row_counts_do_not_get_mixed_up():
    rows.insert([a_call("one")])
    rows.insert([a_call("two-a"), a_call("two-b")])
    rows.insert([a_call("one-again")])

    assert sorted(OperationLog.objects.values_list("request_id", flat=True)) == [
        "one",
        "one-again",
        "two-a",
        "two-b",
    ]


@pytest.mark.django_db
def test_an_empty_list_runs_no_query():
    with CaptureQueriesContext(connection) as inserting:
        rows.insert([])

    assert inserting.captured_queries == []
    assert not OperationLog.objects.exists()


@pytest.mark.django_db
def test_an_inserted_row_is_no_longer_new_so_saving_it_again_is_refused():
    row = a_call("once")

    rows.insert([row])

    assert row._state.adding is False
    assert row._state.db == "default"
    # An append-only row knows it is stored: a second save() cannot insert it again.
    with pytest.raises(AppendOnlyError):
        row.save()
    assert OperationLog.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db
def test_money_keeps_all_of_its_18_places_on_postgresql():
    row = a_call("widest", cost=WIDEST_MONEY)

    rows.insert([row])

    stored = OperationLog.objects.get(pk=row.pk).cost
    assert stored == WIDEST_MONEY
    assert format(stored, "f") == "123456789012.123456789012345678"


@pytest.mark.django_db
def test_without_returning_rows_it_falls_back_to_bulk_create_and_still_sets_pks(monkeypatch):
    monkeypatch.setattr(connection.features, "can_return_rows_from_bulk_insert", False)
    calls = [a_call("fallback-a"), a_call("fallback-b")]

    rows.insert(calls)

    stored = OperationLog.objects.order_by("pk")
    assert [row.request_id for row in stored] == ["fallback-a", "fallback-b"]
    assert [row.pk for row in calls] == [row.pk for row in stored]
    assert all(row._state.adding is False for row in calls)
