"""Playbooks: bounded, declared-safe, reversible runs that keep the engine moving.

`run_playbook("diagnose")` and `run_playbook("repair", dry_run=True)` are what the
Self-heal page, the commands, the worker and auto-heal call; `rollback(execution,
user=...)` is the page's one-click undo.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied

from controlplane.tiers import StaffUser
from selfheal.models import PlaybookExecution
from selfheal.playbooks import diagnose, repair
from selfheal.playbooks.events import EXECUTION_EVENT, SELFHEAL_GROUP
from selfheal.playbooks.executor import (
    FIX_TASK_KIND,
    REPAIR_OVER_CAP_ACTION,
    Playbook,
    PlaybookRun,
    UnknownPlaybook,
    UnsafeActionError,
    get_playbook,
    playbooks,
    register_playbook,
)
from selfheal.playbooks.snapshots import RollbackRefused, rollback
from selfheal.playbooks.steps import (
    MAX_STEPS,
    SAFE_ACTIONS,
    PlaybookDefinitionError,
    PlaybookError,
    Step,
    step,
)
from selfheal.task_kinds import (
    PermanentFailure,
    TaskContext,
    declare_person_kind,
    register_kind,
)

__all__ = [
    "EXECUTION_EVENT",
    "MAX_STEPS",
    "PLAYBOOK_TASK_KIND",
    "REPAIR_OVER_CAP_ACTION",
    "SAFE_ACTIONS",
    "SELFHEAL_GROUP",
    "Playbook",
    "PlaybookDefinitionError",
    "PlaybookError",
    "PlaybookRun",
    "RollbackRefused",
    "Step",
    "UnknownPlaybook",
    "UnsafeActionError",
    "connect",
    "diagnose",
    "execute_playbook_task",
    "get_playbook",
    "playbooks",
    "register_playbook",
    "repair",
    "rollback",
    "run_playbook",
    "step",
]


def run_playbook(
    name: str,
    *,
    user: StaffUser | None = None,
    dry_run: bool = False,
    trigger: str = PlaybookExecution.Trigger.MANUAL,
    params: dict[str, Any] | None = None,
) -> PlaybookExecution:
    """Run the playbook `name` and return its recorded execution.

    `user` None means the system (a command, auto-heal, a worker); a user needs the
    `selfheal.run_playbook` permission (Operators and Owners have it).
    """
    playbook = get_playbook(name)
    if user is not None and not user.has_perm("selfheal.run_playbook"):
        raise PermissionDenied("Running playbooks needs the Operator tier.")
    return playbook.execute(user=user, dry_run=dry_run, trigger=trigger, params=params)


PLAYBOOK_TASK_KIND = "playbook.run"


def execute_playbook_task(context: TaskContext) -> dict[str, Any]:
    """Worker handler for `playbook.run` tasks: payload {"playbook": name, "dry_run": bool}."""
    name = str(context.payload.get("playbook") or "")
    try:
        execution = run_playbook(
            name,
            dry_run=bool(context.payload.get("dry_run", False)),
            trigger=PlaybookExecution.Trigger.WORKER,
        )
    except UnknownPlaybook as exc:
        raise PermanentFailure(str(exc)) from None
    if execution.status == PlaybookExecution.Status.FAILED:
        raise RuntimeError(f"Execution #{execution.pk} failed: {execution.error}")
    return {"execution": execution.pk, "status": execution.status, "summary": execution.summary}


def connect() -> None:
    """Register the approval waiter and the worker's `playbook.run` kind; called from
    `SelfhealConfig.ready()`, so every process (web, Celery, worker) has them."""
    repair.register_waiters()
    register_kind(PLAYBOOK_TASK_KIND, execute_playbook_task)
    # Fixing the code behind an error is a developer's job: no worker can do it.
    declare_person_kind(
        FIX_TASK_KIND, "a person to fix the code behind the error, then mark it done"
    )
