"""The task engine: tasks that move only along `TRANSITIONS`, and the workers that
do them under leases.

A worker claims a task atomically and gets a lease and a fencing token (one more
than the task's last one). Whatever it reports afterwards (extend, complete, fail,
release) carries that token and is a conditional UPDATE on it: once the lease is
lost and the task given to another worker the token is stale and the report is
refused, so no task is ever completed twice. Every status change goes through
`_move()`: a conditional UPDATE on the status it leaves, audited and published to
the Engine page on commit.

The periodic parts build on this module: `selfheal.stuck` puts the work of expired
leases and silent workers back in the queue; `selfheal.unblock` asks a person (an
approval) when no live worker can do a task, instead of letting it wait forever.
What the engine refuses, it says with the errors of `selfheal.engine_errors`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from controlplane import audit
from controlplane.live import publish
from controlplane.tiers import StaffUser
from selfheal import storable, task_kinds
from selfheal.engine_errors import (
    EngineError,
    InvalidTask,
    TransitionRefused,
    lease_refusal,
    offline_refusal,
    unstorable_refusal,
)
from selfheal.models import OPEN_STATUSES, TRANSITIONS, Task, TaskStatus, Worker

ENGINE_GROUP = "selfheal"
ENGINE_CHANGED = "engine.changed"
# The service account (`service_account(SELFHEAL_SERVICE)`) that stands for self-heal,
# the engine and the playbooks alike, in the approvals it asks for.
SELFHEAL_SERVICE = "selfheal"
CLAIM_ORDER = ("-priority", "created_at", "id")
# SQLite has no SKIP LOCKED: a claim tries the first few candidates in order with a
# conditional UPDATE each, and the first it wins is its task.
CLAIM_CANDIDATES = 20
MISSED_HEARTBEATS = 3
DEDUPE_RETRIES = 3


# -- creating tasks ------------------------------------------------------------------


def create_task(
    title: str,
    kind: str,
    payload: dict[str, Any] | None = None,
    priority: int = 0,
    required_capabilities: Iterable[str] = (),
    source: str = Task.Source.MANUAL,
    dedupe_key: str = "",
    max_attempts: int = 3,
    *,
    actor: StaffUser | None = None,
) -> Task:
    """A new pending task; when `dedupe_key` names an open task, that task instead."""
    fields = _task_fields(
        title, kind, payload, priority, required_capabilities, source, dedupe_key, max_attempts
    )
    for _ in range(DEDUPE_RETRIES):
        if dedupe_key and (existing := open_task_for(dedupe_key)) is not None:
            return existing
        try:
            with transaction.atomic():
                task = Task.objects.create(**fields)
                _record(task, "created", before=None, actor=actor, kind=kind, source=source)
                return task
        except IntegrityError:
            if not dedupe_key:
                raise
            # Another caller opened a task with this key between our look and our
            # insert (the partial unique constraint refused ours): return theirs.
    raise EngineError(f"Could not create or find the open task for key '{dedupe_key}'.")


def open_task_for(dedupe_key: str) -> Task | None:
    return Task.objects.filter(dedupe_key=dedupe_key, status__in=OPEN_STATUSES).first()


def _task_fields(
    title: str,
    kind: str,
    payload: dict[str, Any] | None,
    priority: int,
    required_capabilities: Iterable[str],
    source: str,
    dedupe_key: str,
    max_attempts: int,
) -> dict[str, Any]:
    if not title.strip() or not kind.strip():
        raise InvalidTask("A task needs a title and a kind.")
    if max_attempts < 1:
        raise InvalidTask("max_attempts must be at least 1.")
    if source not in Task.Source.values:
        raise InvalidTask(f"Unknown source '{source}'; one of {', '.join(Task.Source.values)}.")
    if isinstance(required_capabilities, str):
        raise InvalidTask("required_capabilities is a list of names, not one string.")
    return {
        "title": title.strip()[:200],
        "kind": kind.strip(),
        "payload": payload or {},
        "priority": priority,
        "required_capabilities": normalized_capabilities(required_capabilities),
        "source": source,
        "dedupe_key": dedupe_key,
        "max_attempts": max_attempts,
    }


def normalized_capabilities(capabilities: Iterable[str]) -> list[str]:
    return sorted({str(name).strip() for name in capabilities if str(name).strip()})


# -- moving tasks ----------------------------------------------------------------------


def transition(task: Task, to: str, *, actor: StaffUser | None = None, reason: str = "") -> Task:
    """Move `task` to status `to`, audited; refuses (writing nothing) an invalid move."""
    old = task.status
    if to not in TRANSITIONS.get(old, set()):
        allowed = ", ".join(sorted(TRANSITIONS.get(old, set()))) or "nothing (it is final)"
        raise TransitionRefused(
            f"Task #{task.pk} is {old} and cannot become {to}; it can become: {allowed}."
        )
    if to == TaskStatus.RUNNING:
        raise TransitionRefused(
            f"Task #{task.pk} starts running only when a worker claims it (with a lease)."
        )
    if old == TaskStatus.PENDING and to == TaskStatus.COMPLETED and not task.for_a_person:
        raise TransitionRefused(
            f"Task #{task.pk} ({task.kind}) is a worker's: it completes when a worker does it."
        )
    moved = _move(task, old, to, fields=_entering(to, old, reason), actor=actor, reason=reason)
    if moved is None:
        current = Task.objects.filter(pk=task.pk).values_list("status", flat=True).first()
        raise TransitionRefused(
            f"Task #{task.pk} is no longer {old} (it is {current or 'deleted'} now); "
            "nothing was changed."
        )
    return moved


def _entering(to: str, old: str, reason: str) -> dict[str, Any]:
    """The fields a task's move to `to` sets besides its status."""
    now = timezone.now()
    if to == TaskStatus.PENDING:
        fields: dict[str, Any] = {"lease_worker": None, "lease_expires_at": None}
        if old == TaskStatus.FAILED:  # a person retries it: a fresh set of attempts
            fields.update(attempts=0, error="", result=None, finished_at=None)
        return {**fields, "blocked_reason": ""}
    if to == TaskStatus.BLOCKED:
        return {"lease_worker": None, "lease_expires_at": None, "blocked_reason": reason}
    if to == TaskStatus.WAITING_APPROVAL:
        return {"lease_worker": None, "lease_expires_at": None}
    fields = {"lease_expires_at": None, "finished_at": now}
    if to == TaskStatus.FAILED and reason:
        fields["error"] = reason
    return fields


def _move(
    task: Task,
    old: str,
    to: str,
    *,
    where: Q | None = None,
    fields: dict[str, Any] | None = None,
    actor: StaffUser | None = None,
    reason: str = "",
    **details: Any,
) -> Task | None:
    """Move the task from `old` to `to` if it is still `old` (and matches `where`);
    audit and publish the move. None when the task was not in that state."""
    now = timezone.now()
    # No savepoint: a claim runs this inside its own transaction, and a failure here
    # fails the whole operation anyway.
    with transaction.atomic(savepoint=False):
        rows = Task.objects.filter(Q(pk=task.pk, status=old) & (where or Q()))
        if not rows.update(status=to, updated_at=now, **(fields or {})):
            return None
        task.refresh_from_db()
        _record(task, to, before={"status": old}, actor=actor, reason=reason, **details)
    return task


def _record(
    task: Task, verb: str, *, before: Any, actor: StaffUser | None, reason: str = "", **details: Any
) -> None:
    after = {"status": task.status, **details}
    if reason:
        after["reason"] = reason
    audit.record(f"task.{verb}", task, before=before, after=after, actor=actor)
    publish(ENGINE_GROUP, ENGINE_CHANGED, task_id=task.pk, status=task.status)


# -- workers: heartbeat and claim -----------------------------------------------------


def heartbeat(
    worker: Worker, *, capabilities: Iterable[str] | None = None, version: str | None = None
) -> Worker:
    """The worker is alive: online (unless draining), with what it says it can do."""
    changes: dict[str, Any] = {
        "status": Worker.Status.DRAINING
        if worker.status == Worker.Status.DRAINING
        else Worker.Status.ONLINE,
    }
    if capabilities is not None:
        changes["capabilities"] = normalized_capabilities(capabilities)
    if version is not None:
        changes["version"] = version[:50]
    before = {name: getattr(worker, name) for name in changes}
    changed = {name for name, value in changes.items() if before[name] != value}
    with transaction.atomic():
        # Beats are frequent: one plain UPDATE, audited only when something changes.
        now = timezone.now()
        Worker._base_manager.filter(pk=worker.pk).update(last_heartbeat=now, **changes)
        for name, value in {**changes, "last_heartbeat": now}.items():
            setattr(worker, name, value)
        if changed:
            _record_worker(
                worker,
                "online" if "status" in changed else "changed",
                before={name: before[name] for name in sorted(changed)},
                after={name: changes[name] for name in sorted(changed)},
            )
    return worker


def _record_worker(
    worker: Worker, verb: str, *, before: dict[str, Any], after: dict[str, Any]
) -> None:
    audit.record(f"worker.{verb}", worker, before=before, after=after)
    publish(ENGINE_GROUP, ENGINE_CHANGED, worker_id=worker.pk, status=worker.status)


def claim(worker: Worker, *, kinds: Collection[str] | None = None) -> Task | None:
    """The highest-priority (then oldest) pending task this worker can do, now leased
    to it with a new fencing token; None when there is none.

    `kinds` limits the claim to the task kinds the worker knows how to execute.
    An offline worker is refused (WorkerOffline) until a heartbeat brings it back.
    """
    with transaction.atomic():
        # The worker's row stays locked until the claim commits, so marking it offline
        # waits and then releases this lease with the others (never a lease left held
        # by an offline worker).
        current = Worker._base_manager.select_for_update().filter(pk=worker.pk)
        row = current.values_list("status", "revoked_at", "capabilities").first()
        if row is None:
            return None
        worker.status, worker.revoked_at, worker.capabilities = row
        if worker.status == Worker.Status.OFFLINE:
            raise offline_refusal(worker.name)
        if worker.status == Worker.Status.DRAINING or worker.revoked_at is not None:
            return None
        # A person's to-do is never a worker's, whatever kinds the worker claims.
        pending = Task.objects.filter(status=TaskStatus.PENDING).exclude(
            kind__in=task_kinds.person_kinds()
        )
        claimable = pending.doable_with(worker.capabilities or [], kinds).order_by(*CLAIM_ORDER)
        candidates = claimable.values_list("pk", flat=True)
        if connection.vendor == "postgresql":
            return _claim_skip_locked(worker, candidates)
        return _claim_conditional(worker, candidates)


def _claim_skip_locked(worker: Worker, candidates: QuerySet[Task, int]) -> Task | None:
    """PostgreSQL: lock the first candidate no other claim holds, skipping locked rows,
    so concurrent workers take different tasks instead of queueing on one (inside the
    claim's transaction)."""
    task_id = candidates.select_for_update(skip_locked=True).first()
    if task_id is None:
        return None
    return _take(worker, task_id)


def _claim_conditional(worker: Worker, candidates: QuerySet[Task, int]) -> Task | None:
    for task_id in list(candidates[:CLAIM_CANDIDATES]):
        task = _take(worker, task_id)
        if task is not None:
            return task
    return None


def _take(worker: Worker, task_id: int) -> Task | None:
    now = timezone.now()
    return _move(
        Task(pk=task_id),
        TaskStatus.PENDING,
        TaskStatus.RUNNING,
        fields={
            "lease_worker": worker,
            "lease_expires_at": now + lease_duration(),
            "fencing_token": F("fencing_token") + 1,
            "attempts": F("attempts") + 1,
            "started_at": now,
        },
        worker=worker.name,
    )


def lease_duration() -> timedelta:
    return timedelta(seconds=settings.LEASE_SECONDS)


def silence_limit() -> timedelta:
    """How long a worker may go unheard and still count as live."""
    return timedelta(seconds=MISSED_HEARTBEATS * settings.HEARTBEAT_SECONDS)


# -- workers: reporting under the lease ------------------------------------------------


def _held(worker: Worker, fencing_token: int) -> Q:
    return Q(lease_worker=worker, fencing_token=fencing_token)


def extend_lease(worker: Worker, task_id: int, fencing_token: int) -> Task:
    """Push the lease's expiry out by LEASE_SECONDS from now."""
    now = timezone.now()
    extended = Task.objects.filter(
        _held(worker, fencing_token), pk=task_id, status=TaskStatus.RUNNING
    ).update(lease_expires_at=now + lease_duration(), updated_at=now)
    if not extended:
        raise lease_refusal(task_id, fencing_token, "lease extension")
    return Task.objects.get(pk=task_id)


def complete(worker: Worker, task_id: int, fencing_token: int, result: Any = None) -> Task:
    """Completed with `result`; one the database cannot store is refused
    (UnstorableResult) and the lease is left as it was."""
    if (problem := storable.problem_in(result, "result")) is not None:
        raise unstorable_refusal(task_id, problem)
    task = _move(
        Task(pk=task_id),
        TaskStatus.RUNNING,
        TaskStatus.COMPLETED,
        where=_held(worker, fencing_token),
        fields={
            "result": result,
            "error": "",
            "finished_at": timezone.now(),
            "lease_expires_at": None,
        },
        worker=worker.name,
    )
    if task is None:
        raise lease_refusal(task_id, fencing_token, "completion")
    return task


def fail(
    worker: Worker, task_id: int, fencing_token: int, error: str, *, retryable: bool = True
) -> Task:
    """Back to pending when retryable and attempts remain; failed for good otherwise."""
    error = error.strip() or "The worker reported a failure without a message."
    held = _held(worker, fencing_token)
    task = None
    if retryable:
        task = _move(
            Task(pk=task_id),
            TaskStatus.RUNNING,
            TaskStatus.PENDING,
            where=held & Q(attempts__lt=F("max_attempts")),
            fields={"error": error, "lease_worker": None, "lease_expires_at": None},
            reason=error,
            worker=worker.name,
            retry=True,
        )
    if task is None:
        task = _move(
            Task(pk=task_id),
            TaskStatus.RUNNING,
            TaskStatus.FAILED,
            where=held,
            fields={"error": error, "finished_at": timezone.now(), "lease_expires_at": None},
            reason=error,
            worker=worker.name,
            retryable=retryable,
        )
    if task is None:
        raise lease_refusal(task_id, fencing_token, "failure report")
    return task


def release(worker: Worker, task_id: int, fencing_token: int, reason: str = "") -> Task:
    """The worker hands the task back untouched (it is stopping): pending again, and
    the attempt it took at claim is given back."""
    reason = reason.strip() or f"Handed back by worker {worker.name}."
    task = _move(
        Task(pk=task_id),
        TaskStatus.RUNNING,
        TaskStatus.PENDING,
        where=_held(worker, fencing_token),
        fields={
            "lease_worker": None,
            "lease_expires_at": None,
            "attempts": F("attempts") - 1,
        },
        reason=reason,
        worker=worker.name,
        handed_back=True,
    )
    if task is None:
        raise lease_refusal(task_id, fencing_token, "hand-back")
    return task


def go_offline(worker: Worker, reason: str) -> list[Task]:
    """Mark the worker offline and put the tasks it still holds back in the queue."""
    mark_offline(worker, reason)
    return release_leases(worker, reason)


def mark_offline(worker: Worker, reason: str, *, where: Q | None = None) -> bool:
    """Mark the worker offline (if it still matches `where`); False when it already was."""
    with transaction.atomic():
        old = worker.status
        went = (
            Worker._base_manager.filter(Q(pk=worker.pk) & (where or Q()))
            .exclude(status=Worker.Status.OFFLINE)
            .update(status=Worker.Status.OFFLINE)
        )
        if went:
            worker.status = Worker.Status.OFFLINE
            _record_worker(
                worker,
                "offline",
                before={"status": old},
                after={"status": Worker.Status.OFFLINE, "reason": reason},
            )
    return bool(went)


def release_leases(worker: Worker, reason: str) -> list[Task]:
    held = Task.objects.filter(status=TaskStatus.RUNNING, lease_worker=worker)
    lost = [requeue_lost(task, f"Worker {worker.name} went offline: {reason}") for task in held]
    return [task for task in lost if task is not None]


def requeue_lost(task: Task, reason: str, *, where: Q | None = None) -> Task | None:
    """A running task whose worker is gone: pending again while attempts remain (the
    lost attempt was counted at claim), else failed. None if it moved meanwhile."""
    where = Q(fencing_token=task.fencing_token) & (where or Q())
    old_worker = task.lease_worker.name if task.lease_worker else ""
    moved = _move(
        task,
        TaskStatus.RUNNING,
        TaskStatus.PENDING,
        where=where & Q(attempts__lt=F("max_attempts")),
        fields={"error": reason, "lease_worker": None, "lease_expires_at": None},
        reason=reason,
        worker=old_worker,
    )
    if moved is not None:
        return moved
    return _move(
        task,
        TaskStatus.RUNNING,
        TaskStatus.FAILED,
        where=where,
        fields={
            "error": f"{reason} No attempts left.",
            "finished_at": timezone.now(),
            "lease_expires_at": None,
        },
        reason=f"{reason} No attempts left.",
        worker=old_worker,
    )


def hold_for_approval(task: Task, reason: str) -> Task | None:
    """A pending task no worker can do waits for a person's decision instead; None
    when it was claimed or changed since `task` was read (its `updated_at`)."""
    return _move(
        task,
        TaskStatus.PENDING,
        TaskStatus.WAITING_APPROVAL,
        where=Q(updated_at=task.updated_at),
        fields={"lease_worker": None, "lease_expires_at": None, "blocked_reason": reason},
        reason=reason,
    )
