from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection, transaction
from django.utils import timezone

from controlplane.models import FeatureToggle, NotificationChannel, NotificationDelivery
from routing import budget_notices, budgets, stale_reservations, tasks
from routing import ledger as ledger_sql
from routing.budgets import (
    BudgetExceeded,
    applicable_budgets,
    budget_day,
    resets_at,
    spend_today,
    would_exceed,
)
from routing.models import Budget, BudgetDay, OperationLog, Reservation
from routing.reservations import release, reserve, settle
from routing.stale_reservations import write_off_stale_reservations

NEW_YORK = "America/New_York"


def dollars(text: str) -> Decimal:
    return Decimal(text)


def make_budget(limit: str = "10", scope: str = Budget.Scope.GLOBAL, **target: Any) -> Budget:
    return Budget.objects.create(scope=scope, daily_limit=dollars(limit), **target)


def ledger(budget: Budget, day: date | None = None) -> BudgetDay:
    return BudgetDay.objects.get(budget=budget, day=day or budget_day())


def stored(reservation: Reservation) -> Reservation:
    return Reservation.objects.get(pk=reservation.pk)


def turn_off_enforcement() -> None:
    FeatureToggle.objects.update_or_create(
        key=budgets.ENFORCED_TOGGLE, defaults={"enabled": False, "critical": True}
    )
    # The cache is published on commit, which a rolled-back test never reaches.
    cache.delete(FeatureToggle.cache_key(budgets.ENFORCED_TOGGLE))


class Clock:
    """Stands in for django.utils.timezone.now; set in local (settings) time."""

    def __init__(self) -> None:
        self.at = timezone.now()

    def __call__(self) -> datetime:
        return self.at

    def set_local(self, text: str) -> None:
        self.at = datetime.fromisoformat(text).replace(tzinfo=timezone.get_default_timezone())


@pytest.fixture
def new_york(settings: Any) -> None:
    settings.TIME_ZONE = NEW_YORK


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(timezone, "now", clock)
    return clock


class Notices:
    """Records what the budgets module notifies, from whichever thread."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, subject: str, body: str = "", *, dedupe_key: str, **_: Any) -> list:
        with self._lock:
            self.sent.append((subject, body, dedupe_key))
        return []

    @property
    def keys(self) -> list[str]:
        return [key for _, _, key in self.sent]


@pytest.fixture
def notices(monkeypatch: pytest.MonkeyPatch) -> Notices:
    notices = Notices()
    monkeypatch.setattr(budget_notices, "notify", notices)
    return notices


# The calendar.


@pytest.mark.django_db
def test_the_budget_day_is_the_date_in_the_configured_time_zone(new_york, clock):
    clock.at = datetime.fromisoformat("2025-01-16T00:30:00+00:00")  # 19:30 in New York
    assert budget_day() == date(2025, 1, 15)


@pytest.mark.django_db
def test_a_day_resets_at_the_next_local_midnight_with_its_offset(new_york):
    assert resets_at(date(2025, 1, 15)).isoformat() == "2025-01-16T00:00:00-05:00"
    # Clocks spring forward on 9 March 2025: the reset carries the new offset.
    assert resets_at(date(2025, 3, 9)).isoformat() == "2025-03-10T00:00:00-04:00"


@pytest.mark.django_db
def test_spend_at_2359_counts_on_its_day_and_0001_the_next_day_starts_fresh(new_york, clock):
    budget = make_budget("10")
    clock.set_local("2025-01-15 23:59")
    settle(reserve("late", dollars("10"), [budget]), dollars("10"))
    with pytest.raises(BudgetExceeded) as refused:
        reserve("too-late", dollars("1"), [budget])
    assert refused.value.resets_at.isoformat() == "2025-01-16T00:00:00-05:00"

    clock.set_local("2025-01-16 00:01")
    reserve("early", dollars("4"), [budget])

    assert ledger(budget, date(2025, 1, 15)).spent == dollars("10")
    today = ledger(budget, date(2025, 1, 16))
    assert (today.spent, today.reserved, today.limit) == (0, dollars("4"), dollars("10"))


@pytest.mark.django_db
def test_a_call_reserved_before_midnight_settles_on_the_day_it_was_reserved(new_york, clock):
    budget = make_budget("10")
    clock.set_local("2025-01-15 23:59")
    reservation = reserve("across-midnight", dollars("3"), [budget])
    clock.set_local("2025-01-16 00:02")
    settle(reservation, dollars("2"))
    yesterday = ledger(budget, date(2025, 1, 15))
    assert (yesterday.spent, yesterday.reserved) == (dollars("2"), 0)
    assert not BudgetDay.objects.filter(day=date(2025, 1, 16)).exists()


# Which budgets apply.


@pytest.mark.django_db
def test_applicable_budgets_are_the_enabled_ones_of_every_matching_scope(operator, operator2):
    everything = make_budget("100")
    mine = make_budget("5", Budget.Scope.USER, user=operator)
    make_budget("5", Budget.Scope.USER, user=operator2)
    chat = make_budget("20", Budget.Scope.OPERATION, operation="chat")
    make_budget("20", Budget.Scope.OPERATION, operation="summarize")
    billing = make_budget("30", Budget.Scope.SERVICE, service="billing")
    make_budget("30", Budget.Scope.SERVICE, service="search", enabled=False)

    assert applicable_budgets(operator, "chat", "billing") == [everything, mine, chat, billing]
    assert applicable_budgets(operator, "chat", "search") == [everything, mine, chat]


@pytest.mark.django_db
def test_a_call_without_a_user_counts_against_global_operation_and_service_budgets(operator):
    everything = make_budget("100")
    make_budget("5", Budget.Scope.USER, user=operator)
    chat = make_budget("20", Budget.Scope.OPERATION, operation="chat")
    assert applicable_budgets(None, "chat") == [everything, chat]


# Reserving.


@pytest.mark.django_db
def test_a_reservation_is_held_on_every_budget_that_applies(operator):
    everything, mine = make_budget("100"), make_budget("5", Budget.Scope.USER, user=operator)
    reservation = reserve("call-1", dollars("1.25"), [everything, mine])
    assert reservation.status == Reservation.Status.HELD
    assert not reservation.approved
    assert set(reservation.days.all()) == {ledger(everything), ledger(mine)}
    assert ledger(everything).reserved == ledger(mine).reserved == dollars("1.25")
    assert ledger(mine).limit == dollars("5")


@pytest.mark.django_db
def test_reserving_and_settling_take_a_query_per_budget_and_a_few_more(
    operator, django_assert_max_num_queries
):
    three = [
        make_budget("100"),
        make_budget("100", Budget.Scope.USER, user=operator),
        make_budget("100", Budget.Scope.OPERATION, operation="chat"),
    ]
    settle(reserve("first-of-the-day", dollars("1"), three), dollars("1"))
    # Counts include the savepoint and its release around each transaction.
    with django_assert_max_num_queries(8):
        reservation = reserve("call", dollars("1"), three)
    with django_assert_max_num_queries(8):
        settle(reservation, dollars("1"))


@pytest.mark.django_db
def test_a_call_that_fills_the_budget_exactly_is_allowed():
    budget = make_budget("10")
    reserve("all-of-it", dollars("10"), [budget])
    assert ledger(budget).reserved == dollars("10")


@pytest.mark.django_db
def test_an_over_limit_call_is_refused_naming_the_budget_its_limit_spend_and_reset(new_york, clock):
    budget = make_budget("10", Budget.Scope.OPERATION, operation="summarize")
    clock.set_local("2025-01-15 15:00")
    settle(reserve("done", dollars("6"), [budget]), dollars("6"))
    reserve("in-flight", dollars("3"), [budget])

    with pytest.raises(BudgetExceeded) as refused:
        reserve("one-too-many", dollars("1.5"), [budget])

    message = str(refused.value)
    assert "operation summarize budget" in message
    assert "daily limit is $10.00" in message
    assert "$6.00 is spent and $3.00 reserved by calls in flight" in message
    assert "needs an estimated $1.50" in message
    assert "resets at 2025-01-16T00:00:00-05:00" in message
    assert refused.value.budget == budget
    assert refused.value.details() == {
        "budget": "operation summarize budget",
        "budget_id": budget.pk,
        "scope": "operation",
        "limit": "10",
        "spent": "6",
        "reserved": "3",
        "requested": "1.5",
        "day": "2025-01-15",
        "resets_at": "2025-01-16T00:00:00-05:00",
        "retry_after": 9 * 3600 + 1,
    }
    assert not Reservation.objects.filter(request_id="one-too-many").exists()
    assert ledger(budget).reserved == dollars("3")


@pytest.mark.django_db
def test_a_refusal_by_one_budget_leaves_nothing_reserved_on_the_others(operator):
    everything = make_budget("100")
    chat = make_budget("50", Budget.Scope.OPERATION, operation="chat")
    mine = make_budget("2", Budget.Scope.USER, user=operator)
    with pytest.raises(BudgetExceeded) as refused:
        reserve("too-much-for-me", dollars("3"), [everything, chat, mine])
    assert refused.value.budget == mine
    assert not BudgetDay.objects.exclude(reserved=0).exists()
    assert not Reservation.objects.exists()


@pytest.mark.django_db
def test_a_call_with_no_budgets_is_still_recorded():
    reservation = reserve("unbudgeted", dollars("2"), [])
    assert stored(reservation).amount == dollars("2")
    assert settle(reservation, dollars("1"))


@pytest.mark.django_db
def test_a_negative_reservation_is_refused():
    with pytest.raises(ValueError, match="cannot be negative"):
        reserve("refund?", dollars("-1"), [make_budget()])


@pytest.mark.django_db
def test_a_limit_changed_during_the_day_applies_from_the_next_call_on():
    budget = make_budget("10")
    reserve("before", dollars("4"), [budget])
    budget.daily_limit = dollars("5")
    budget.save()
    with pytest.raises(BudgetExceeded, match=r"daily limit is \$5\.00"):
        reserve("after", dollars("2"), [budget])
    assert ledger(budget).limit == dollars("5")


# Settling and releasing.


@pytest.mark.django_db
def test_settling_replaces_the_reservation_with_the_actual_cost():
    budget = make_budget("10")
    reservation = reserve("call", dollars("2"), [budget])
    assert settle(reservation, dollars("0.75"))
    assert (ledger(budget).spent, ledger(budget).reserved) == (dollars("0.75"), 0)
    reservation = stored(reservation)
    assert reservation.status == Reservation.Status.SETTLED
    assert reservation.actual == dollars("0.75")
    assert reservation.closed_at is not None


@pytest.mark.django_db
def test_settling_twice_changes_nothing_the_second_time():
    budget = make_budget("10")
    reservation = reserve("call", dollars("2"), [budget])
    assert settle(reservation, dollars("1"))
    assert not settle(reservation, dollars("1"))
    assert not settle(stored(reservation), dollars("5"))
    assert (ledger(budget).spent, ledger(budget).reserved) == (dollars("1"), 0)
    assert stored(reservation).actual == dollars("1")


@pytest.mark.django_db
def test_a_cost_above_the_reservation_is_recorded_in_full_even_past_the_limit():
    budget = make_budget("10")
    settle(reserve("estimated-low", dollars("8"), [budget]), dollars("12.5"))
    assert (ledger(budget).spent, ledger(budget).reserved) == (dollars("12.5"), 0)
    with pytest.raises(BudgetExceeded, match=r"\$12\.50 is spent"):
        reserve("next", dollars("0.25"), [budget])


@pytest.mark.django_db
def test_releasing_gives_the_whole_reservation_back_once():
    budget = make_budget("10")
    reservation = reserve("failed", dollars("6"), [budget])
    assert release(reservation)
    assert not release(reservation)
    assert (ledger(budget).spent, ledger(budget).reserved) == (0, 0)
    assert stored(reservation).status == Reservation.Status.RELEASED
    reserve("retry", dollars("10"), [budget])


@pytest.mark.django_db
def test_a_settled_reservation_cannot_be_released():
    budget = make_budget("10")
    reservation = reserve("call", dollars("3"), [budget])
    settle(reservation, dollars("3"))
    assert not release(stored(reservation))
    assert (ledger(budget).spent, ledger(budget).reserved) == (dollars("3"), 0)


@pytest.mark.django_db
def test_a_call_that_finishes_after_the_sweep_released_it_still_records_its_cost():
    budget = make_budget("10")
    reservation = reserve("slow", dollars("3"), [budget])
    release(reservation)
    assert settle(reservation, dollars("2.5"))
    assert (ledger(budget).spent, ledger(budget).reserved) == (dollars("2.5"), 0)
    assert not settle(reservation, dollars("2.5"))


@pytest.mark.django_db
def test_the_sweep_writes_off_only_reservations_held_longer_than_the_cutoff(clock):
    budget = make_budget("10")
    start, day = clock.at, budget_day()
    crashed = reserve("crashed", dollars("2"), [budget], operation="chat", service="billing")
    settled = reserve("settled", dollars("1"), [budget])
    settle(settled, dollars("1"))
    clock.at = start + timedelta(minutes=50)
    running = reserve("running", dollars("3"), [budget])

    clock.at = start + timedelta(minutes=61)
    assert write_off_stale_reservations(timedelta(hours=1)) == 1
    assert write_off_stale_reservations(timedelta(hours=1)) == 0

    # The provider may have charged: the money stays spent, at the reservation.
    assert stored(crashed).status == Reservation.Status.SETTLED
    assert stored(crashed).actual == dollars("2")
    assert stored(settled).status == Reservation.Status.SETTLED
    assert stored(running).status == Reservation.Status.HELD
    assert (ledger(budget, day).spent, ledger(budget, day).reserved) == (
        dollars("3"),
        dollars("3"),
    )
    # ... and the call has its log row, saying why it cost that.
    row = OperationLog.objects.get(request_id="crashed")
    assert (row.operation, row.service, row.cost) == ("chat", "billing", dollars("2"))
    assert (row.status, row.cost_source) == ("error", "reserved")
    assert "never recorded" in row.error


@pytest.mark.django_db
def test_a_call_recorded_late_after_the_write_off_is_not_charged_twice(clock):
    budget = make_budget("10")
    start, day = clock.at, budget_day()
    late = reserve("late", dollars("2"), [budget])
    clock.at = start + stale_reservations.STALE_AFTER + timedelta(seconds=1)
    assert write_off_stale_reservations() == 1

    assert not settle(late, dollars("0.5"))
    assert ledger(budget, day).spent == dollars("2")


@pytest.mark.django_db
def test_the_sweep_task_writes_off_stale_reservations_after_an_hour(clock):
    budget = make_budget("10")
    start, day = clock.at, budget_day()
    reserve("crashed", dollars("2"), [budget])
    clock.at = start + stale_reservations.STALE_AFTER + timedelta(seconds=1)
    assert tasks.write_off_stale_reservations() == 1
    assert (ledger(budget, day).spent, ledger(budget, day).reserved) == (dollars("2"), 0)


@pytest.mark.django_db
def test_a_reservation_written_off_after_midnight_is_spent_on_the_day_it_was_made(clock):
    """Held from 23:30 and written off at 00:31: the money counts against the day
    the call was made, whose reservation it was, and the new day starts empty."""
    budget = make_budget("10")
    clock.set_local("2026-03-10T23:30:00")
    reserve("crashed", dollars("2"), [budget])
    clock.set_local("2026-03-11T00:31:00")

    assert write_off_stale_reservations() == 1

    made_on = ledger(budget, date(2026, 3, 10))
    assert (made_on.spent, made_on.reserved) == (dollars("2"), 0)
    assert not BudgetDay.objects.filter(budget=budget, day=date(2026, 3, 11), spent__gt=0).exists()


# Approval override and the enforcement toggle.


@pytest.mark.django_db
def test_an_approved_call_may_go_past_the_limit_and_says_it_was_approved():
    budget = make_budget("10")
    settle(reserve("earlier", dollars("9"), [budget]), dollars("9"))
    reservation = reserve("approved", dollars("4"), [budget], approved=True)
    assert stored(reservation).approved
    assert ledger(budget).reserved == dollars("4")
    settle(reservation, dollars("4"))
    assert ledger(budget).spent == dollars("13")


@pytest.mark.django_db
def test_an_approved_call_still_counts_so_the_next_unapproved_one_is_refused():
    budget = make_budget("10")
    reserve("approved", dollars("11"), [budget], approved=True)
    with pytest.raises(BudgetExceeded):
        reserve("unapproved", dollars("0.01"), [budget])


@pytest.mark.django_db
def test_with_enforcement_off_every_reservation_succeeds_and_is_still_recorded():
    turn_off_enforcement()
    budget = make_budget("1")
    reservation = reserve("over", dollars("5"), [budget])
    assert not stored(reservation).approved
    assert ledger(budget).reserved == dollars("5")
    settle(reservation, dollars("5"))
    assert ledger(budget).spent == dollars("5")


# The approval rule's question.


@pytest.mark.django_db
def test_would_exceed_names_the_first_budget_without_room_and_reserves_nothing(operator):
    everything = make_budget("100")
    mine = make_budget("3", Budget.Scope.USER, user=operator)
    settle(reserve("spent", dollars("1"), [everything, mine]), dollars("1"))
    reserve("in-flight", dollars("1"), [everything, mine])

    assert would_exceed([everything, mine], dollars("1")) is None
    assert would_exceed([everything, mine], dollars("1.01")) == mine
    assert ledger(mine).reserved == dollars("1")
    assert Reservation.objects.count() == 2


@pytest.mark.django_db
def test_would_exceed_uses_the_limit_on_a_day_with_no_spend_yet():
    budget = make_budget("2")
    assert would_exceed([budget], dollars("2")) is None
    assert would_exceed([budget], dollars("2.5")) == budget
    assert not BudgetDay.objects.exists()


@pytest.mark.django_db
def test_would_exceed_finds_nothing_when_budgets_are_not_enforced():
    turn_off_enforcement()
    assert would_exceed([make_budget("1")], dollars("5")) is None


# Threshold notifications.


@pytest.mark.django_db
def test_each_threshold_notifies_once_at_50_80_and_100_percent(
    notices, django_capture_on_commit_callbacks
):
    budget = make_budget("10")
    day = budget_day().isoformat()
    with django_capture_on_commit_callbacks(execute=True):
        for number, cost in enumerate(["4", "0.5", "0.5", "2", "1", "1", "1"]):
            settle(reserve(f"call-{number}", dollars(cost), [budget]), dollars(cost))
        settle(reserve("approved", dollars("2"), [budget], approved=True), dollars("2"))
    assert notices.keys == [f"budget:{budget.pk}:{day}:{pct}" for pct in (50, 80, 100)]
    assert "The global budget reached 80% of its daily limit" in notices.sent[1][0]
    assert ledger(budget).thresholds_notified == [50, 80, 100]


@pytest.mark.django_db
def test_a_settlement_crossing_several_thresholds_notifies_each_of_them_once(
    notices, django_capture_on_commit_callbacks
):
    budget = make_budget("10")
    day = budget_day().isoformat()
    with django_capture_on_commit_callbacks(execute=True):
        settle(reserve("big", dollars("9"), [budget]), dollars("9"))
        settle(reserve("small", dollars("0.5"), [budget]), dollars("0.5"))
        settle(reserve("past", dollars("0.5"), [budget], approved=True), dollars("5"))
    assert notices.keys == [f"budget:{budget.pk}:{day}:{pct}" for pct in (50, 80, 100)]
    assert "reached 50% of its daily limit" in notices.sent[0][0]
    assert "$9.00 of $10.00 spent" in notices.sent[1][1]
    assert ledger(budget).thresholds_notified == [50, 80, 100]


@pytest.mark.django_db
def test_thresholds_notify_again_on_the_next_day(
    new_york, clock, notices, django_capture_on_commit_callbacks
):
    budget = make_budget("10")
    with django_capture_on_commit_callbacks(execute=True):
        clock.set_local("2025-01-15 12:00")
        settle(reserve("monday", dollars("6"), [budget]), dollars("6"))
        clock.set_local("2025-01-16 12:00")
        settle(reserve("tuesday", dollars("6"), [budget]), dollars("6"))
    assert notices.keys == [
        f"budget:{budget.pk}:2025-01-15:50",
        f"budget:{budget.pk}:2025-01-16:50",
    ]


@pytest.mark.django_db
def test_a_settlement_that_rolls_back_notifies_nothing(notices, django_capture_on_commit_callbacks):
    budget = make_budget("10")
    reservation = reserve("call", dollars("6"), [budget])
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        settle(reservation, dollars("6"))
        transaction.set_rollback(True)
    assert notices.sent == []
    assert ledger(budget).thresholds_notified == []


@pytest.mark.django_db
def test_a_threshold_notice_reaches_every_channel_once(django_capture_on_commit_callbacks):
    NotificationChannel.objects.create(name="ops-mail", kind="email", target="ops@example.com")
    budget = make_budget("10", Budget.Scope.SERVICE, service="billing")
    with django_capture_on_commit_callbacks(execute=True):
        settle(reserve("a", dollars("5"), [budget]), dollars("5"))
        settle(reserve("b", dollars("0.1"), [budget]), dollars("0.1"))
    delivery = NotificationDelivery.objects.get()
    assert delivery.dedupe_key == f"budget:{budget.pk}:{budget_day().isoformat()}:50"
    assert delivery.subject == "The service billing budget reached 50% of its daily limit"


# Today's spend.


@pytest.mark.django_db
def test_spend_today_has_a_row_per_enabled_budget_with_remaining_and_percent(operator):
    everything = make_budget("10")
    mine = make_budget("2", Budget.Scope.USER, user=operator)
    make_budget("0", Budget.Scope.OPERATION, operation="chat")
    make_budget("5", Budget.Scope.SERVICE, service="off", enabled=False)
    settle(reserve("spent", dollars("1"), [everything, mine]), dollars("2.5"))
    reserve("in-flight", dollars("0.5"), [everything])

    rows = {str(row.budget): row for row in spend_today()}

    assert set(rows) == {"global budget", f"user {operator} budget", "operation chat budget"}
    total = rows["global budget"]
    assert (total.limit, total.spent, total.reserved) == (
        dollars("10"),
        dollars("2.5"),
        dollars("0.5"),
    )
    assert (total.remaining, total.percent) == (dollars("7"), dollars("25.0"))
    overrun = rows[f"user {operator} budget"]
    assert (overrun.remaining, overrun.percent) == (0, dollars("125.0"))
    assert rows["operation chat budget"].percent is None


# Concurrency, on PostgreSQL: many calls at once never take a budget past its limit.

THREADS = 50
THRESHOLDS = (50, 80, 100)


def skip_unless_postgres() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL)")


class Race:
    """Runs `call(n)` in THREADS threads released together by a barrier."""

    def __init__(self, threads: int = THREADS) -> None:
        self.threads = threads
        self.barrier = threading.Barrier(threads)
        self.outcomes: list[tuple[str, Any]] = []
        self._lock = threading.Lock()

    def _record(self, outcome: tuple[str, Any]) -> None:
        with self._lock:
            self.outcomes.append(outcome)

    def _run(self, call: Callable[[int], Any], number: int) -> None:
        try:
            Budget.objects.exists()  # connect before the start line
            budgets.budgets_enforced()
            self.barrier.wait(timeout=30)
            try:
                call(number)
            except BudgetExceeded as exc:
                self._record(("refused", exc))
            else:
                self._record(("reserved", number))
        except Exception as exc:  # surfaced in the main thread's assertions
            self._record(("crashed", repr(exc)))
        finally:
            connection.close()

    def run(self, call: Callable[[int], Any]) -> None:
        threads = [
            threading.Thread(target=self._run, args=(call, number))
            for number in range(self.threads)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

    def count(self, kind: str) -> int:
        return sum(1 for outcome, _ in self.outcomes if outcome == kind)

    def refusals(self) -> list[BudgetExceeded]:
        return [exc for outcome, exc in self.outcomes if outcome == "refused"]

    def crashes(self) -> list[Any]:
        return [detail for outcome, detail in self.outcomes if outcome == "crashed"]


class LedgerWatcher:
    """Reads a budget's ledger over and over during a race, keeping the highest total."""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.highest = Decimal(0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch)

    def _watch(self) -> None:
        try:
            while not self._stop.is_set():
                row = BudgetDay.objects.filter(budget=self.budget).values("reserved", "spent")
                for totals in row:
                    self.highest = max(self.highest, totals["reserved"] + totals["spent"])
        finally:
            connection.close()

    def __enter__(self) -> LedgerWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_reservations_against_room_for_ten_give_exactly_ten():
    skip_unless_postgres()
    budget = make_budget("10")
    race = Race()

    with LedgerWatcher(budget) as watcher:
        race.run(lambda n: reserve(f"call-{n}", dollars("1"), [budget]))

    assert race.crashes() == []
    assert (race.count("reserved"), race.count("refused")) == (10, 40)
    for refusal in race.refusals():
        assert refusal.budget == budget
        assert "global budget" in str(refusal)
        assert "daily limit is $10.00" in str(refusal)
    assert ledger(budget).reserved == dollars("10")
    assert watcher.highest <= dollars("10")
    assert Reservation.objects.filter(status=Reservation.Status.HELD).count() == 10


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_calls_that_reserve_and_settle_never_spend_past_the_limit():
    skip_unless_postgres()
    budget = make_budget("10")
    race = Race()

    def call(number: int) -> None:
        reservation = reserve(f"call-{number}", dollars("1"), [budget])
        settle(reservation, dollars("1"))

    with LedgerWatcher(budget) as watcher:
        race.run(call)

    assert race.crashes() == []
    assert (race.count("reserved"), race.count("refused")) == (10, 40)
    assert all(refusal.budget == budget for refusal in race.refusals())
    assert (ledger(budget).spent, ledger(budget).reserved) == (dollars("10"), 0)
    assert watcher.highest <= dollars("10")
    assert Reservation.objects.filter(status=Reservation.Status.SETTLED).count() == 10


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_user_budget_refusing_concurrent_calls_leaves_nothing_on_the_global_one(operator):
    skip_unless_postgres()
    everything = make_budget("1000")
    mine = make_budget("10", Budget.Scope.USER, user=operator)
    race = Race()

    race.run(lambda n: reserve(f"call-{n}", dollars("1"), applicable_budgets(operator)))

    assert race.crashes() == []
    assert (race.count("reserved"), race.count("refused")) == (10, 40)
    assert all(refusal.budget == mine for refusal in race.refusals())
    assert ledger(mine).reserved == ledger(everything).reserved == dollars("10")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_users_racing_against_a_global_budget_share_it_without_passing_any_limit(
    operator, operator2
):
    skip_unless_postgres()
    everything = make_budget("15")
    theirs = [make_budget("10", Budget.Scope.USER, user=user) for user in (operator, operator2)]
    people = [operator, operator2]
    race = Race()

    race.run(lambda n: reserve(f"call-{n}", dollars("1"), applicable_budgets(people[n % 2])))

    assert race.crashes() == []
    assert (race.count("reserved"), race.count("refused")) == (15, 35)
    assert {refusal.budget for refusal in race.refusals()} <= {everything, *theirs}
    per_user = [ledger(budget).reserved for budget in theirs]
    assert all(reserved <= dollars("10") for reserved in per_user)
    assert ledger(everything).reserved == sum(per_user) == dollars("15")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_settlements_notify_each_threshold_once(notices):
    skip_unless_postgres()
    budget = make_budget("10")
    held = [reserve(f"call-{n}", dollars("1"), [budget]) for n in range(10)]
    race = Race(threads=10)

    race.run(lambda n: settle(held[n], dollars("1")))

    assert race.crashes() == []
    assert ledger(budget).spent == dollars("10")
    assert ledger(budget).thresholds_notified == [50, 80, 100]
    day = budget_day().isoformat()
    assert sorted(notices.keys) == sorted(f"budget:{budget.pk}:{day}:{pct}" for pct in THRESHOLDS)


# A reservation a database crash lost (its commit does not wait for the disk).


def lose_in_a_crash(reservation: Reservation) -> None:
    """What a crash that loses the reservation's transaction leaves: neither the row
    (nor its ledger links) nor the amount it added to each ledger's `reserved`."""
    ledger_ids = list(reservation.days.values_list("pk", flat=True))
    Reservation.objects.filter(pk=reservation.pk).delete()
    for ledger_id in ledger_ids:
        ledger_sql.unhold(ledger_id, reservation.amount)


@pytest.mark.django_db
def test_settling_a_reservation_a_crash_lost_records_the_money_in_full(operator, caplog):
    everything, mine = make_budget("10"), make_budget("5", Budget.Scope.USER, user=operator)
    reservation = reserve("lost-call", dollars("2"), [everything, mine])
    lose_in_a_crash(reservation)
    assert not Reservation.objects.exists()
    assert (ledger(everything).reserved, ledger(mine).reserved) == (0, 0)

    with caplog.at_level("WARNING", logger="routing.reservations"):
        assert settle(reservation, dollars("1.5"))

    for budget in (everything, mine):
        assert (ledger(budget).spent, ledger(budget).reserved) == (dollars("1.5"), 0)
    recreated = Reservation.objects.get(request_id="lost-call")
    assert recreated.status == Reservation.Status.SETTLED
    assert (recreated.amount, recreated.actual) == (dollars("2"), dollars("1.5"))
    assert recreated.closed_at is not None
    assert "lost-call" in caplog.text
    assert reservation.status == Reservation.Status.SETTLED


@pytest.mark.django_db
def test_a_lost_reservation_counts_towards_the_next_calls_limit():
    budget = make_budget("10")
    reservation = reserve("lost-call", dollars("8"), [budget])
    lose_in_a_crash(reservation)

    settle(reservation, dollars("9"))

    with pytest.raises(BudgetExceeded):
        reserve("next", dollars("2"), [budget])


@pytest.mark.django_db
def test_settling_a_lost_reservation_twice_changes_nothing_the_second_time():
    budget = make_budget("10")
    reservation = reserve("lost-call", dollars("2"), [budget])
    lose_in_a_crash(reservation)
    assert settle(reservation, dollars("1"))

    with transaction.atomic():  # keeps the test's transaction usable if it raises
        second = settle(reservation, dollars("1"))

    assert second is False
    assert ledger(budget).spent == dollars("1")


@pytest.mark.django_db(transaction=True)
def test_a_reservation_commits_without_waiting_for_the_disk_and_a_settlement_waits():
    from django.test.utils import CaptureQueriesContext

    no_wait = {
        "postgresql": "set_config('synchronous_commit', 'off', true)",  # in its one statement
        "sqlite": "PRAGMA synchronous = NORMAL",
    }[connection.vendor]
    budget = make_budget("10")
    reserve("first", dollars("1"), [budget])  # the day's ledger exists from here on

    with CaptureQueriesContext(connection) as reserving:
        reservation = reserve("call", dollars("1"), [budget])
    with CaptureQueriesContext(connection) as settling:
        settle(reservation, dollars("1"))

    assert any(no_wait in query["sql"] for query in reserving.captured_queries)
    assert not any("synchronous" in query["sql"].lower() for query in settling.captured_queries)
    assert (ledger(budget).spent, ledger(budget).reserved) == (dollars("1"), dollars("1"))
