"""What the task engine refuses, and why, in words for a person (or a worker's log):
the API answers each with its own status, the pages show the message."""

from __future__ import annotations

from selfheal.models import Task, TaskStatus


class EngineError(Exception):
    """A refused engine operation; the message says why, for a person to read."""


class InvalidTask(EngineError):
    pass


class TransitionRefused(EngineError):
    pass


class TaskNotFound(EngineError):
    pass


class UnstorableResult(EngineError):
    """A completion whose result the database cannot store: refused, and the task
    stays leased to the worker, which may complete it again or fail it."""


class WorkerOffline(EngineError):
    """The worker was marked offline (it said it was stopping, or went silent): it
    claims nothing until a heartbeat says it is back."""


class LeaseLost(EngineError):
    """The caller's lease is gone: expired and given to another worker, or finished."""


def lease_refusal(task_id: int, fencing_token: int, what: str) -> EngineError:
    """Why a report under a lease (`what`: "completion", ...) was refused, in words a
    person can act on."""
    task = Task.objects.filter(pk=task_id).first()
    if task is None:
        return TaskNotFound(f"There is no task #{task_id}.")
    if task.fencing_token != fencing_token:
        return LeaseLost(
            f"Task #{task_id} was claimed again after your lease was lost: your fencing "
            f"token {fencing_token} is stale (the current one is {task.fencing_token}). "
            f"Your {what} was refused."
        )
    if task.status != TaskStatus.RUNNING:
        return LeaseLost(
            f"Task #{task_id} is {task.status}, no longer running under your lease. "
            f"Your {what} was refused."
        )
    return LeaseLost(f"Task #{task_id} is not leased to you. Your {what} was refused.")


def offline_refusal(worker_name: str) -> WorkerOffline:
    return WorkerOffline(
        f"Worker {worker_name} is offline (it said it was stopping, or its heartbeats "
        "stopped): send a heartbeat, then claim."
    )


def unstorable_refusal(task_id: int, problem: str) -> UnstorableResult:
    return UnstorableResult(
        f"{problem} Nothing was recorded: task #{task_id} is still leased to you; "
        "complete it with a result that can be stored, or fail it."
    )
