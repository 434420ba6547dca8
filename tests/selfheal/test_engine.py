from __future__ import annotations

import re
import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from controlplane.models import AuditEvent
from selfheal import engine
from selfheal.engine_errors import (
    InvalidTask,
    LeaseLost,
    TaskNotFound,
    TransitionRefused,
    UnstorableResult,
    WorkerOffline,
)
from selfheal.models import TRANSITIONS, Task, TaskStatus, Worker
from tests.selfheal import make_task, make_worker, stored


def task_events(task: Task, action: str | None = None) -> list[AuditEvent]:
    events = AuditEvent.objects.filter(action__startswith="task.", object_id=str(task.pk))
    if action:
        events = events.filter(action=action)
    return list(events.order_by("id"))


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, dict[str, Any]]]:
    sent: list[tuple[str, str, dict[str, Any]]] = []
    monkeypatch.setattr(
        engine, "publish", lambda group, kind, **data: sent.append((group, kind, data))
    )
    return sent


def force_status(task: Task, status: str) -> Task:
    Task.objects.filter(pk=task.pk).update(status=status)
    return stored(task)


# Creating tasks.


@pytest.mark.django_db
def test_a_new_task_is_pending_audited_and_published(published):
    task = make_task(
        "Rotate the keys",
        "echo",
        payload={"key": "a"},
        priority=5,
        required_capabilities=["ops", "db", "ops"],
        source="chat",
        max_attempts=2,
    )
    task = stored(task)
    assert task.status == TaskStatus.PENDING
    assert task.payload == {"key": "a"}
    assert task.required_capabilities == ["db", "ops"]
    assert (task.priority, task.source, task.max_attempts, task.attempts) == (5, "chat", 2, 0)
    (event,) = task_events(task)
    assert event.action == "task.created"
    assert event.after == {"status": "pending", "kind": "echo", "source": "chat"}
    assert published == [("selfheal", "engine.changed", {"task_id": task.pk, "status": "pending"})]


@pytest.mark.django_db
def test_creating_a_task_whose_key_is_open_returns_the_open_one():
    first = make_task(dedupe_key="fix:db-timeouts")
    again = make_task("Another title", dedupe_key="fix:db-timeouts")
    assert again.pk == first.pk
    assert Task.objects.count() == 1
    assert len(task_events(first, "task.created")) == 1


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["running", "blocked", "waiting_approval"])
def test_a_key_stays_taken_while_its_task_is_open_in_any_way(status):
    first = force_status(make_task(dedupe_key="k"), status)
    assert make_task(dedupe_key="k").pk == first.pk


@pytest.mark.django_db
@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_a_key_is_free_again_once_its_task_is_finished(status):
    first = force_status(make_task(dedupe_key="k"), status)
    second = make_task(dedupe_key="k")
    assert second.pk != first.pk
    assert second.status == TaskStatus.PENDING


@pytest.mark.django_db
def test_tasks_without_a_key_are_never_deduplicated():
    assert make_task().pk != make_task().pk


@pytest.mark.django_db
def test_a_creation_that_loses_the_race_for_a_key_returns_the_winner(monkeypatch):
    winner = make_task(dedupe_key="k")
    looks = []
    real_look = engine.open_task_for

    def look_too_early(key: str) -> Task | None:
        # The first look happens before the winner committed: it sees nothing.
        looks.append(key)
        return None if len(looks) == 1 else real_look(key)

    monkeypatch.setattr(engine, "open_task_for", look_too_early)
    assert make_task(dedupe_key="k").pk == winner.pk
    assert len(looks) == 2
    assert Task.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"title": " "}, "needs a title and a kind"),
        ({"kind": ""}, "needs a title and a kind"),
        ({"max_attempts": 0}, "at least 1"),
        ({"source": "elsewhere"}, "Unknown source"),
        ({"required_capabilities": "ops"}, "list of names"),
    ],
)
def test_a_task_that_makes_no_sense_is_refused(fields, message):
    arguments = {"title": "Rotate", "kind": "noop", **fields}
    with pytest.raises(InvalidTask, match=message):
        engine.create_task(**arguments)
    assert not Task.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_many_creators_of_one_key_at_once_get_one_task():
    barrier = threading.Barrier(10)
    created: list[int] = []
    errors: list[str] = []

    def create() -> None:
        try:
            barrier.wait(timeout=10)
            created.append(make_task(dedupe_key="fix:same-error").pk)
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=create) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert len(created) == 10
    assert len(set(created)) == 1
    assert Task.objects.count() == 1


# Moving tasks.

INVALID_MOVES = [
    (old, new)
    for old in TaskStatus.values
    for new in TaskStatus.values
    if new not in TRANSITIONS[old]
]


@pytest.mark.django_db
@pytest.mark.parametrize(("old", "new"), INVALID_MOVES)
def test_a_move_outside_the_transition_map_is_refused_and_writes_nothing(old, new):
    task = force_status(make_task(), old)
    events = AuditEvent.objects.count()
    with pytest.raises(TransitionRefused, match=f"is {old} and cannot become {new}"):
        engine.transition(task, new)
    assert stored(task).status == old
    assert stored(task).updated_at == task.updated_at
    assert AuditEvent.objects.count() == events


@pytest.mark.django_db
def test_a_valid_move_is_audited_with_before_after_actor_and_reason(operator, published):
    task = make_task()
    engine.transition(task, TaskStatus.BLOCKED, actor=operator, reason="Disk full on db-1")
    task = stored(task)
    assert task.status == TaskStatus.BLOCKED
    assert task.blocked_reason == "Disk full on db-1"
    (event,) = task_events(task, "task.blocked")
    assert event.actor == operator
    assert event.before == {"status": "pending"}
    assert event.after == {"status": "blocked", "reason": "Disk full on db-1"}
    assert published[-1] == (
        "selfheal",
        "engine.changed",
        {"task_id": task.pk, "status": "blocked"},
    )


@pytest.mark.django_db
def test_every_valid_move_but_running_is_possible_through_transition():
    for old, moves in TRANSITIONS.items():
        for new in moves - {TaskStatus.RUNNING}:
            # Pending to completed is a person's to-do marked done (workers complete theirs).
            kind = "chat.request" if (old, new) == ("pending", "completed") else "noop"
            task = force_status(make_task(f"{old} to {new}", kind), old)
            engine.transition(task, new)
            assert stored(task).status == new
            assert len(task_events(task, f"task.{new}")) == 1


@pytest.mark.django_db
def test_a_task_runs_only_through_a_claim():
    task = make_task()
    with pytest.raises(TransitionRefused, match="only when a worker claims it"):
        engine.transition(task, TaskStatus.RUNNING)
    assert stored(task).status == TaskStatus.PENDING


@pytest.mark.django_db
def test_a_stale_copy_cannot_move_a_task_that_moved_meanwhile():
    task = make_task()
    stale = stored(task)
    engine.transition(task, TaskStatus.CANCELLED)
    with pytest.raises(TransitionRefused, match=r"no longer pending .*cancelled now"):
        engine.transition(stale, TaskStatus.BLOCKED)
    assert stored(task).status == TaskStatus.CANCELLED
    assert task_events(task, "task.blocked") == []


@pytest.mark.django_db
def test_a_finished_task_keeps_its_finish_time_and_a_failure_its_reason():
    task = engine.transition(make_task(), TaskStatus.BLOCKED)
    task = engine.transition(task, TaskStatus.FAILED, reason="Gave up: no disk")
    assert task.finished_at is not None
    assert task.error == "Gave up: no disk"


@pytest.mark.django_db
def test_retrying_a_failed_task_gives_it_fresh_attempts():
    worker, _ = make_worker()
    task = make_task(max_attempts=1)
    claimed = engine.claim(worker)
    assert claimed is not None
    engine.fail(worker, task.pk, claimed.fencing_token, "boom")
    assert stored(task).status == TaskStatus.FAILED
    retried = engine.transition(stored(task), TaskStatus.PENDING)
    assert (retried.attempts, retried.error, retried.finished_at) == (0, "", None)
    assert engine.claim(worker) is not None


@pytest.mark.django_db
def test_a_cancelled_running_task_refuses_its_late_completion():
    worker, _ = make_worker()
    task = make_task()
    claimed = engine.claim(worker)
    assert claimed is not None
    engine.transition(stored(task), TaskStatus.CANCELLED)
    with pytest.raises(LeaseLost, match="is cancelled, no longer running under your lease"):
        engine.complete(worker, task.pk, claimed.fencing_token, {"done": True})
    assert stored(task).result is None


# Heartbeats.


@pytest.mark.django_db
def test_a_heartbeat_puts_the_worker_online_with_its_capabilities_and_version():
    worker, _ = make_worker(online=False)
    engine.heartbeat(worker, capabilities=["ops", "db"], version="builtin-0.1")
    worker = Worker.objects.get(pk=worker.pk)
    assert worker.status == Worker.Status.ONLINE
    assert worker.capabilities == ["db", "ops"]
    assert worker.version == "builtin-0.1"
    assert timezone.now() - worker.last_heartbeat < timedelta(seconds=5)
    event = AuditEvent.objects.get(action="worker.online", object_id=str(worker.pk))
    assert event.before == {"capabilities": [], "status": "offline", "version": ""}


@pytest.mark.django_db
def test_heartbeats_that_change_nothing_are_not_audited():
    worker, _ = make_worker(capabilities=["ops"])
    events = AuditEvent.objects.count()
    for _ in range(3):
        engine.heartbeat(worker, capabilities=["ops"])
    assert AuditEvent.objects.count() == events


@pytest.mark.django_db
def test_a_heartbeat_keeps_a_draining_worker_draining():
    worker, _ = make_worker()
    Worker._base_manager.filter(pk=worker.pk).update(status=Worker.Status.DRAINING)
    worker.refresh_from_db()
    engine.heartbeat(worker)
    assert Worker.objects.get(pk=worker.pk).status == Worker.Status.DRAINING


# Claiming.


@pytest.mark.django_db
def test_a_claim_gives_the_highest_priority_task_first_then_the_oldest():
    worker, _ = make_worker()
    low = make_task("low", priority=0)
    old_high = make_task("old high", priority=5)
    new_high = make_task("new high", priority=5)
    top = make_task("top", priority=9)
    order = [engine.claim(worker) for _ in range(4)]
    assert [task.pk for task in order if task] == [top.pk, old_high.pk, new_high.pk, low.pk]
    assert engine.claim(worker) is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("required", "has", "claims"),
    [
        ([], [], True),
        ([], ["ops"], True),
        (["ops"], ["ops"], True),
        (["ops"], ["db", "ops", "gpu"], True),
        (["ops", "db"], ["ops"], False),
        (["ops"], [], False),
        (["gpu"], ["ops", "db"], False),
    ],
)
def test_a_claim_takes_only_tasks_whose_capabilities_the_worker_has(required, has, claims):
    worker, _ = make_worker(capabilities=has)
    task = make_task(required_capabilities=required)
    claimed = engine.claim(worker)
    assert (claimed is not None) == claims
    assert stored(task).status == (TaskStatus.RUNNING if claims else TaskStatus.PENDING)


@pytest.mark.django_db
def test_a_claim_skips_the_tasks_it_cannot_do_for_one_it_can_further_down():
    worker, _ = make_worker(capabilities=["ops"])
    for number in range(engine.CLAIM_CANDIDATES + 5):
        make_task(f"gpu {number}", priority=9, required_capabilities=["gpu"])
    doable = make_task("ops", priority=0, required_capabilities=["ops"])
    claimed = engine.claim(worker)
    assert claimed is not None
    assert claimed.pk == doable.pk


@pytest.mark.django_db
def test_a_claim_leases_the_task_with_a_new_fencing_token_and_counts_the_attempt(settings):
    settings.LEASE_SECONDS = 90
    worker, _ = make_worker()
    task = make_task()
    claimed = engine.claim(worker)
    assert claimed is not None
    assert claimed.pk == task.pk
    assert claimed.status == TaskStatus.RUNNING
    assert claimed.lease_worker == worker
    assert (claimed.fencing_token, claimed.attempts) == (1, 1)
    assert claimed.started_at is not None
    left = claimed.lease_expires_at - timezone.now()
    assert timedelta(seconds=85) < left <= timedelta(seconds=90)
    (event,) = task_events(task, "task.running")
    assert event.before == {"status": "pending"}
    assert event.after == {"status": "running", "worker": "worker-1"}


@pytest.mark.django_db
def test_a_claim_can_be_limited_to_the_kinds_a_worker_knows():
    worker, _ = make_worker()
    make_task("unknown kind", kind="playbook.run", priority=9)
    known = make_task("known kind", kind="echo")
    claimed = engine.claim(worker, kinds=["echo", "noop"])
    assert claimed is not None
    assert claimed.pk == known.pk
    assert engine.claim(worker, kinds=["echo"]) is None


@pytest.mark.django_db
def test_a_draining_or_revoked_worker_claims_nothing():
    draining, _ = make_worker("draining")
    revoked, _ = make_worker("revoked")
    make_task()
    # As stored: a claim reads the worker's row, not the caller's copy of it.
    Worker._base_manager.filter(pk=draining.pk).update(status=Worker.Status.DRAINING)
    Worker._base_manager.filter(pk=revoked.pk).update(revoked_at=timezone.now())
    assert engine.claim(draining) is None
    assert engine.claim(revoked) is None
    assert Task.objects.get().status == TaskStatus.PENDING


@pytest.mark.django_db
def test_an_offline_worker_is_refused_until_it_heartbeats():
    worker, _ = make_worker("gone")
    make_task()
    engine.go_offline(worker, "deploy")
    with pytest.raises(WorkerOffline, match="send a heartbeat"):
        engine.claim(worker)
    assert Task.objects.get().status == TaskStatus.PENDING
    engine.heartbeat(worker)
    assert engine.claim(worker) is not None


@pytest.mark.django_db
def test_only_pending_tasks_are_claimed():
    worker, _ = make_worker()
    for status in ("blocked", "waiting_approval", "completed", "failed", "cancelled"):
        force_status(make_task(status), status)
    assert engine.claim(worker) is None


# Reporting under the lease.


@pytest.fixture
def lease(db: Any) -> tuple[Worker, Task]:
    worker, _ = make_worker()
    make_task(max_attempts=2)
    claimed = engine.claim(worker)
    assert claimed is not None
    return worker, claimed


def test_extending_moves_the_lease_expiry_out(lease, settings):
    worker, task = lease
    Task.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() + timedelta(seconds=5))
    settings.LEASE_SECONDS = 120
    extended = engine.extend_lease(worker, task.pk, task.fencing_token)
    assert extended.lease_expires_at - timezone.now() > timedelta(seconds=110)


def test_extending_with_a_stale_token_is_refused(lease):
    worker, task = lease
    with pytest.raises(LeaseLost, match="fencing token 0 is stale"):
        engine.extend_lease(worker, task.pk, 0)


def test_completing_stores_the_result_and_finishes_the_task(lease):
    worker, task = lease
    done = engine.complete(worker, task.pk, task.fencing_token, {"rotated": 3})
    assert done.status == TaskStatus.COMPLETED
    assert done.result == {"rotated": 3}
    assert done.finished_at is not None
    assert done.lease_expires_at is None
    assert done.lease_worker == worker  # who did it
    (event,) = task_events(task, "task.completed")
    assert event.after == {"status": "completed", "worker": "worker-1"}


def test_completing_twice_is_refused_and_keeps_the_first_result(lease):
    worker, task = lease
    engine.complete(worker, task.pk, task.fencing_token, {"first": True})
    with pytest.raises(LeaseLost, match="is completed"):
        engine.complete(worker, task.pk, task.fencing_token, {"second": True})
    assert stored(task).result == {"first": True}
    assert len(task_events(task, "task.completed")) == 1


@pytest.mark.parametrize(
    ("result", "where"),
    [
        ({"ratio": float("nan")}, "'result.ratio'"),
        ([1, float("inf")], "'result[1]'"),
        ({"log": "a\x00b"}, "'result.log'"),
        ({"a\x00": 1}, "A key in 'result'"),
    ],
)
def test_a_result_the_database_cannot_store_is_refused_and_the_lease_kept(lease, result, where):
    worker, task = lease
    with pytest.raises(UnstorableResult, match=f"{re.escape(where)}.*still leased to you"):
        engine.complete(worker, task.pk, task.fencing_token, result)
    held = stored(task)
    assert (held.status, held.lease_worker, held.result) == (TaskStatus.RUNNING, worker, None)
    assert engine.complete(worker, task.pk, task.fencing_token, {"ok": 1}).result == {"ok": 1}


def test_a_retryable_failure_goes_back_to_pending_while_attempts_remain(lease):
    worker, task = lease
    failed = engine.fail(worker, task.pk, task.fencing_token, "Connection reset")
    assert failed.status == TaskStatus.PENDING
    assert failed.error == "Connection reset"
    assert failed.lease_worker is None
    assert failed.attempts == 1
    (event,) = task_events(task, "task.pending")
    assert event.after["retry"] is True
    assert event.after["reason"] == "Connection reset"


def test_a_retryable_failure_fails_for_good_on_the_last_attempt(lease):
    worker, task = lease
    engine.fail(worker, task.pk, task.fencing_token, "Connection reset")
    again = engine.claim(worker)
    assert again is not None
    assert again.attempts == 2
    failed = engine.fail(worker, task.pk, again.fencing_token, "Connection reset")
    assert failed.status == TaskStatus.FAILED
    assert failed.finished_at is not None


def test_a_permanent_failure_fails_at_once(lease):
    worker, task = lease
    failed = engine.fail(worker, task.pk, task.fencing_token, "Bad payload", retryable=False)
    assert failed.status == TaskStatus.FAILED
    assert failed.attempts == 1


def test_releasing_hands_the_task_back_without_using_an_attempt(lease):
    worker, task = lease
    released = engine.release(worker, task.pk, task.fencing_token, "Worker stopping")
    assert released.status == TaskStatus.PENDING
    assert released.attempts == 0
    assert released.lease_worker is None
    (event,) = task_events(task, "task.pending")
    assert event.after["handed_back"] is True


def test_another_workers_report_is_refused(lease):
    _, task = lease
    other, _ = make_worker("worker-2")
    with pytest.raises(LeaseLost, match="not leased to you"):
        engine.complete(other, task.pk, task.fencing_token)
    assert stored(task).status == TaskStatus.RUNNING


def test_a_report_on_an_unknown_task_says_there_is_none(lease):
    worker, _ = lease
    with pytest.raises(TaskNotFound, match="no task #999999"):
        engine.complete(worker, 999_999, 1)


# Many workers claiming at once.


def _claim_until_empty(
    worker_id: int, barrier: threading.Barrier, claims: list[tuple[int, int]], errors: list[str]
) -> None:
    try:
        worker = Worker.objects.get(pk=worker_id)
        barrier.wait(timeout=10)
        while (task := engine.claim(worker)) is not None:
            claims.append((task.pk, worker_id))
            engine.complete(worker, task.pk, task.fencing_token, {"by": worker.name})
    except Exception as exc:  # surfaced in the main thread's assertions
        errors.append(repr(exc))
    finally:
        connection.close()


def claim_from_many_threads(threads: int, tasks: int) -> None:
    workers = [make_worker(f"racer-{n}")[0] for n in range(threads)]
    task_ids = {make_task(f"task {n}", priority=n % 4).pk for n in range(tasks)}
    barrier = threading.Barrier(threads)
    claims: list[tuple[int, int]] = []
    errors: list[str] = []
    running = [
        threading.Thread(target=_claim_until_empty, args=(worker.pk, barrier, claims, errors))
        for worker in workers
    ]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join(timeout=120)

    assert errors == []
    claimed = [task_id for task_id, _ in claims]
    assert sorted(claimed) == sorted(task_ids)  # every task, each exactly once
    finished = Task.objects.filter(pk__in=task_ids)
    assert (
        finished.filter(status=TaskStatus.COMPLETED, fencing_token=1, attempts=1).count() == tasks
    )
    assert AuditEvent.objects.filter(action="task.running").count() == tasks
    assert AuditEvent.objects.filter(action="task.completed").count() == tasks


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_twenty_workers_claiming_from_a_hundred_tasks_claim_each_exactly_once():
    assert connection.vendor == "postgresql"
    claim_from_many_threads(threads=20, tasks=100)


@pytest.mark.django_db(transaction=True)
def test_concurrent_workers_claim_each_task_exactly_once_on_any_database():
    claim_from_many_threads(threads=6, tasks=30)
