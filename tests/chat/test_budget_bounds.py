"""A run's budgets stay within bounds: the retry form says what is wrong with a value
past them, the database refuses one, and a run stored with one before the bounds (or
past them by another path) is stopped with `invalid_budget` instead of crashing the
worker, its session page and the lost-run sweep."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from chat import budget_bounds, runs
from chat.models import ChatSession, Message, Run, RunBudget, RunStatus, StopReason
from chat.runs import detect_lost_runs, open_run
from chat.stop_reasons import explain
from controlplane.money import stored_text

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def stopped_run(user: Any, **fields: Any) -> Run:
    chat = ChatSession.objects.create(user=user, title="Budgets")
    limits = {"max_steps": 10, "max_wall_clock_seconds": 300, "max_cost": Decimal("0.50")}
    run = Run.objects.create(
        session=chat,
        started_by=user,
        mode="normal",
        status=RunStatus.STOPPED,
        **(limits | fields),
    )
    Message.objects.create(session=chat, run=run, role=Message.Role.USER, content="Again")
    return run


def store_unchecked(run_id: int, **values: Any) -> None:
    """Write budgets past the bounds as a row from before them would hold: below the
    ORM, with the CHECK constraints out of the way for this test's transaction."""
    table = Run._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA ignore_check_constraints = ON")
        else:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no deferred checks pending
            for name in values:
                cursor.execute(
                    f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS run_{name}_in_bounds"
                )
        for name, value in values.items():
            cursor.execute(f"UPDATE {table} SET {name} = %s WHERE id = %s", [value, run_id])  # noqa: S608
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA ignore_check_constraints = OFF")


def cost_no_column_reader_can_use() -> Any:
    """A cost past money's digits: SQLite stored such a value as text and could not read
    it back; PostgreSQL's numeric(30, 18) cannot hold it, so there it is only too big."""
    if connection.vendor == "sqlite":
        return stored_text(Decimal("1e30"))
    return Decimal("5000")


# -- the retry form ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("budget", "value", "words"),
    [
        ("max_steps", "1e20", "step budget must be between 1 and 1000"),
        ("max_wall_clock_seconds", "1e12", "time budget (seconds) must be between 1 and 3600"),
        ("max_cost", "1e30", "cost budget (USD) must be between"),
        ("max_steps", "1001", "step budget must be between 1 and 1000, not 1001"),
        ("max_steps", "2.5", "step budget must be a whole number"),
        ("max_retries_per_fingerprint", "101", "retries per failure must be between 1 and 100"),
        ("max_cost", "0", "cost budget (USD) must be between 0.000001 and 1000, not 0"),
    ],
)
def test_a_retry_with_a_budget_past_its_bounds_is_refused_saying_why(
    client: Client, owner: Any, budget: str, value: str, words: str
) -> None:
    previous = stopped_run(owner)
    client.force_login(owner)

    plain = client.post(
        reverse("chat:retry", args=[previous.pk]), {"budget": budget, "value": value}
    )
    htmx = client.post(
        reverse("chat:retry", args=[previous.pk]), {"budget": budget, "value": value}, **HTMX
    )

    assert plain.status_code == 400
    assert words in plain.content.decode()
    assert htmx.headers["HX-Retarget"] == "#run-form-errors"
    assert words in htmx.content.decode()
    assert list(Run.objects.values_list("pk", flat=True)) == [previous.pk]


def test_a_retry_at_the_ceiling_is_accepted(client: Client, owner: Any) -> None:
    previous = stopped_run(owner)
    client.force_login(owner)

    response = client.post(
        reverse("chat:retry", args=[previous.pk]), {"budget": "max_cost", "value": "1000"}
    )

    assert response.status_code == 302
    assert Run.objects.exclude(pk=previous.pk).get().max_cost == Decimal("1000")


def test_limits_given_to_open_run_are_checked_against_the_same_bounds(operator: Any) -> None:
    session = ChatSession.objects.create(user=operator)
    for limits in ({"max_steps": 10**20}, {"max_cost": "1e30"}, {"max_cost": "NaN"}):
        with pytest.raises(ValueError, match="budget"):
            open_run(session, user=operator, message="Hi", mode="normal", limits=limits)
    assert not Run.objects.exists()


# -- the models and the database -------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_steps", 1001),
        ("max_steps", 0),
        ("max_wall_clock_seconds", 3601),
        ("max_cost", Decimal("1000.000001")),
        ("max_cost", Decimal("0")),
        ("max_retries_per_fingerprint", 0),
    ],
)
def test_the_database_refuses_a_run_budget_past_its_bounds(
    operator: Any, field: str, value: Any
) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        stopped_run(operator, **{field: value})


def test_a_modes_budget_out_of_bounds_is_a_validation_error_and_refused_by_the_database() -> None:
    budget = RunBudget.objects.get(mode="normal")
    budget.max_steps = 5000
    with pytest.raises(ValidationError, match="less than or equal to 1000"):
        budget.full_clean()
    with pytest.raises(IntegrityError), transaction.atomic():
        RunBudget.objects.filter(pk=budget.pk).update(max_cost=Decimal("1e6"))


# -- a run stored past the bounds --------------------------------------------------------------


@pytest.mark.parametrize("field", ["max_cost", "max_steps"])
def test_a_run_whose_stored_budget_cannot_be_used_is_stopped_saying_so(
    client: Client, operator: Any, field: str
) -> None:
    session = ChatSession.objects.create(user=operator)
    run = open_run(session, user=operator, message="Hi", mode="normal")
    value = cost_no_column_reader_can_use() if field == "max_cost" else 2_000_000_000
    store_unchecked(run.pk, **{field: value})

    assert runs.run_agent(run.pk) == RunStatus.STOPPED

    run.refresh_from_db()
    assert (run.status, run.stop_reason) == (RunStatus.STOPPED, StopReason.INVALID_BUDGET)
    assert budget_bounds.BUDGET_WORDS[field] in run.last_error
    assert getattr(run, field) == budget_bounds.high(field)  # brought within bounds
    stop = run.events.filter(type="stop_reason").get().data
    assert stop["reason"] == "invalid_budget"
    assert stop["next_action"]["kind"] == "retry"
    client.force_login(operator)
    assert client.get(reverse("chat:session", args=[session.pk])).status_code == 200


def test_the_sweep_stops_a_lost_run_with_an_unusable_budget_and_still_the_others(
    operator: Any,
) -> None:
    session = ChatSession.objects.create(user=operator)
    long_ago = timezone.now() - timedelta(minutes=5)
    broken = open_run(session, user=operator, message="Broken", mode="normal")
    lost = open_run(session, user=operator, message="Lost", mode="normal")
    Run.objects.filter(pk__in=[broken.pk, lost.pk]).update(
        status=RunStatus.THINKING, heartbeat_at=long_ago
    )
    store_unchecked(broken.pk, max_cost=cost_no_column_reader_can_use())

    assert sorted(detect_lost_runs()) == sorted([broken.pk, lost.pk])

    reasons = dict(Run.objects.values_list("pk", "stop_reason"))
    assert reasons == {broken.pk: StopReason.INVALID_BUDGET, lost.pk: StopReason.WORKER_LOST}
    assert detect_lost_runs() == []


# -- advice within bounds ------------------------------------------------------------------


def test_a_run_out_of_steps_is_offered_at_most_the_ceiling(operator: Any) -> None:
    near = explain(StopReason.MAX_STEPS, run=stopped_run(operator, max_steps=600))
    at = explain(StopReason.MAX_STEPS, run=stopped_run(operator, max_steps=1000))
    rich = explain(StopReason.COST_BUDGET, run=stopped_run(operator, max_cost=Decimal(1000)))

    assert (near["next_action"]["kind"], near["next_action"]["value"]) == ("raise_budget", "1000")
    assert at["next_action"]["kind"] == "retry_other_mode"
    assert "the most any run may have" in at["suggestion"]
    assert rich["next_action"]["kind"] == "retry_other_mode"
