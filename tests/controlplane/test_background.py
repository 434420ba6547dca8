"""The background machinery: enqueue on commit, the in-process pool and delayed queue,
and the embedded scheduler that ticks the beat schedule."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import pytest
from celery import shared_task
from django.db import transaction

from controlplane import background
from controlplane.background import EmbeddedScheduler, enqueue
from controlplane.celery import app
from controlplane.models import NotificationChannel, NotificationDelivery
from controlplane.notifications import notify
from tests.local_servers import LocalWebhook

# A generous bound on waiting for background work: it only keeps a broken test from
# hanging, it says nothing about speed.
HANG_GUARD_SECONDS = 60


class Call(NamedTuple):
    value: str
    thread: str
    at: float  # time.monotonic(), the clock of the delayed queue


# What the test tasks did, in which thread and when; waiters are woken on each call.
recorded_calls: list[Call] = []
_calls_changed = threading.Condition()


@shared_task(name="tests.background.record_call")
def record_call(value: str) -> None:
    with _calls_changed:
        recorded_calls.append(Call(value, threading.current_thread().name, time.monotonic()))
        _calls_changed.notify_all()


@shared_task(name="tests.background.explode")
def explode(value: str) -> None:
    raise RuntimeError(f"task blew up on {value}")


@pytest.fixture(autouse=True)
def _forget_calls() -> Iterator[None]:
    recorded_calls.clear()
    yield
    recorded_calls.clear()


@pytest.fixture
def in_process_pool(settings: Any) -> None:
    """The embedded mode: no broker, work runs on the in-process thread pool."""
    settings.BACKGROUND_EAGER = False
    settings.CELERY_BROKER_URL = ""


def values() -> list[str]:
    return [call.value for call in recorded_calls]


def wait_for_values(expected: list[str]) -> list[Call]:
    """The recorded calls, once their values are `expected` (in any order)."""
    with _calls_changed:
        if not _calls_changed.wait_for(
            lambda: sorted(values()) == sorted(expected), timeout=HANG_GUARD_SECONDS
        ):
            raise AssertionError(f"the tasks recorded {values()}, not {expected}")
        return list(recorded_calls)


def wait_for(condition: Callable[[], Any], timeout: float = HANG_GUARD_SECONDS) -> Any:
    """Polls `condition` (a log line, a row written by another thread or process: there
    is no event to wait on) until it holds, and returns its value."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {condition}")
        time.sleep(0.01)
    return value


class FakeClock:
    """Celery's clock, which its schedules read to decide what is due: moves only when told."""

    def __init__(self) -> None:
        # From the real time: `tick()` marks what it ran with the real time.
        self.current = datetime.now(UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, by: timedelta) -> datetime:
        self.current += by
        return self.current


@pytest.fixture
def clock(monkeypatch: Any) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(app, "now", fake.now)
    return fake


@pytest.fixture
def submitted(monkeypatch: Any) -> list[tuple[str, tuple]]:
    """What the scheduler hands to the pool, recorded as it is handed over."""
    handed: list[tuple[str, tuple]] = []
    submit = background._submit

    def record_then_submit(task: Any, args: tuple, kwargs: dict) -> None:
        handed.append((task.name, args))
        submit(task, args, kwargs)

    monkeypatch.setattr(background, "_submit", record_then_submit)
    return handed


# Enqueue on commit


@pytest.mark.django_db
def test_enqueued_work_waits_for_the_transaction_to_commit(
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with transaction.atomic():
            enqueue(record_call, "after commit")
            assert values() == []
        # Still inside the test's own transaction: nothing is committed yet.
        assert values() == []

    assert len(callbacks) == 1
    assert values() == ["after commit"]


@pytest.mark.django_db(transaction=True)
def test_enqueued_work_runs_once_the_outermost_block_commits() -> None:
    with transaction.atomic():
        with transaction.atomic():
            enqueue(record_call, "nested")
        assert values() == []

    assert values() == ["nested"]


@pytest.mark.django_db(transaction=True)
def test_enqueued_work_never_runs_when_the_transaction_rolls_back() -> None:
    def enqueue_then_fail() -> None:
        with transaction.atomic():
            enqueue(record_call, "rolled back")
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        enqueue_then_fail()

    assert values() == []


@pytest.mark.django_db(transaction=True)
def test_enqueued_work_runs_at_once_outside_a_transaction() -> None:
    enqueue(record_call, "autocommit")
    assert values() == ["autocommit"]


@pytest.mark.django_db(transaction=True)
def test_eager_mode_runs_work_in_the_callers_thread_and_raises_its_errors() -> None:
    enqueue(record_call, "eager")
    assert [call[:2] for call in recorded_calls] == [("eager", threading.current_thread().name)]

    with pytest.raises(RuntimeError, match="task blew up on eager"):
        enqueue(explode, "eager")


# The in-process pool


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("in_process_pool")
def test_the_in_process_pool_runs_a_task_in_another_thread() -> None:
    enqueue(record_call, "pooled")

    [call] = wait_for_values(["pooled"])
    assert call.thread != threading.current_thread().name
    assert call.thread.startswith("background")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("in_process_pool")
def test_a_countdown_without_a_broker_delays_the_task_in_process() -> None:
    enqueued_at = time.monotonic()

    enqueue(record_call, "later", countdown=0.3)

    # However busy the machine, the task ran no sooner than its countdown.
    [call] = wait_for_values(["later"])
    assert call.at - enqueued_at >= 0.3
    assert call.thread.startswith("background")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("in_process_pool")
def test_a_failing_task_is_logged_and_the_pool_keeps_working(caplog: Any) -> None:
    with caplog.at_level(logging.ERROR, logger="controlplane.background"):
        enqueue(explode, "pooled")
        wait_for(lambda: "tests.background.explode failed" in caplog.text)
    assert "RuntimeError: task blew up on pooled" in caplog.text  # with its traceback

    enqueue(record_call, "still working")
    [call] = wait_for_values(["still working"])
    assert call.thread.startswith("background")


@pytest.mark.django_db
def test_with_a_broker_work_goes_to_celery_with_its_countdown(
    settings: Any, monkeypatch: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.BACKGROUND_EAGER = False
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(record_call, "apply_async", lambda **options: sent.append(options))

    with django_capture_on_commit_callbacks(execute=True):
        enqueue(record_call, "brokered", countdown=30)

    assert sent == [{"args": ("brokered",), "kwargs": {}, "countdown": 30}]
    assert values() == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("in_process_pool")
def test_the_embedded_mode_delivers_a_notification_with_retries_in_the_background(
    settings: Any,
) -> None:
    # Retries go through the delayed queue, then the pool, as on a laptop.
    settings.NOTIFY_RETRY_BASE_SECONDS = 0.05
    with LocalWebhook([500]) as webhook:
        NotificationChannel.objects.create(
            name="ops-hook", kind=NotificationChannel.Kind.WEBHOOK, target=webhook.url
        )

        [delivery] = notify("Budget at 90%", dedupe_key="budget:90")

        wait_for(
            lambda: NotificationDelivery.objects.filter(
                pk=delivery.pk, status=NotificationDelivery.Status.SENT
            ).exists()
        )
    delivery.refresh_from_db()
    assert delivery.attempts == 2
    assert len(webhook.received) == 2


# The embedded scheduler


# Building a scheduler imports every app's tasks, as a worker does; Celery's Django
# fixup runs the system checks then, and some of them read the database.


def scheduler_of(**schedules: float | timedelta) -> EmbeddedScheduler:
    return EmbeddedScheduler(
        {
            name: {"task": "tests.background.record_call", "schedule": every, "args": (name,)}
            for name, every in schedules.items()
        }
    )


@pytest.mark.django_db
def test_the_scheduler_runs_every_entry_on_the_first_tick_then_only_when_due(
    clock: FakeClock,
) -> None:
    scheduler = scheduler_of(often=timedelta(seconds=10), hourly=timedelta(hours=1))

    assert scheduler.due_tasks(clock.now()) == [
        ("tests.background.record_call", ("often",)),
        ("tests.background.record_call", ("hourly",)),
    ]
    assert scheduler.due_tasks(clock.now()) == []
    assert scheduler.due_tasks(clock.advance(timedelta(seconds=9))) == []

    assert scheduler.due_tasks(clock.advance(timedelta(seconds=1))) == [
        ("tests.background.record_call", ("often",))
    ]
    assert scheduler.due_tasks(clock.now()) == []


@pytest.mark.django_db
def test_the_scheduler_runs_an_entry_again_once_its_interval_has_passed(clock: FakeClock) -> None:
    scheduler = scheduler_of(minutely=timedelta(minutes=1), hourly=timedelta(hours=1))
    scheduler.due_tasks(clock.now())

    # 90 seconds on: the minutely entry is due again, the hourly not.
    assert scheduler.due_tasks(clock.advance(timedelta(seconds=90))) == [
        ("tests.background.record_call", ("minutely",))
    ]


@pytest.mark.django_db(transaction=True)
def test_a_scheduler_tick_runs_the_due_tasks_on_the_pool(
    clock: FakeClock, submitted: list[tuple[str, tuple]]
) -> None:
    scheduler = scheduler_of(first=60.0, second=60.0)

    scheduler.tick()

    calls = wait_for_values(["first", "second"])
    assert all(call.thread.startswith("background") for call in calls)
    # A second tick within the minute hands nothing more to the pool.
    clock.advance(timedelta(seconds=59))
    scheduler.tick()
    assert submitted == [
        ("tests.background.record_call", ("first",)),
        ("tests.background.record_call", ("second",)),
    ]


@pytest.mark.django_db
def test_every_entry_of_the_beat_schedule_names_a_registered_task(settings: Any) -> None:
    scheduler = EmbeddedScheduler(settings.CELERY_BEAT_SCHEDULE)

    assert scheduler.entries
    for task_name, _, _ in scheduler.entries.values():
        assert task_name in app.tasks


@pytest.fixture
def pool_shut_down(monkeypatch: Any) -> None:
    """The in-process pool as Python leaves it once the process has begun to exit."""
    pool = ThreadPoolExecutor(max_workers=1)
    pool.shutdown()
    monkeypatch.setattr(background, "_pool", pool)


@pytest.mark.django_db
@pytest.mark.usefixtures("pool_shut_down")
def test_a_tick_once_the_process_exits_stops_the_scheduler_without_a_traceback(
    clock: FakeClock, caplog: Any
) -> None:
    scheduler = scheduler_of(often=timedelta(seconds=10))

    with caplog.at_level(logging.INFO, logger="controlplane.background"):
        scheduler.tick()
        scheduler.run_forever()  # returns at once: the scheduler is stopped

    assert scheduler._stop.is_set()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info] == []
