"""The unblock router: a pending task that no live worker is able to do waits for a
person (an approval) instead of waiting forever.

Approved, the task goes back to the queue (someone is starting a capable worker);
rejected or expired, it is cancelled. The engine's service account asks.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from controlplane.approvals import register_waiter, request_approval
from controlplane.models import Approval
from controlplane.service_accounts import service_account
from selfheal import task_kinds
from selfheal.engine import (
    CLAIM_ORDER,
    SELFHEAL_SERVICE,
    TransitionRefused,
    hold_for_approval,
    transition,
)
from selfheal.models import Task, TaskStatus, Worker

UNBLOCK_ACTION = "selfheal.unblock_task"


def route_unclaimable_tasks(now: datetime | None = None) -> list[Approval]:
    """Pending tasks that no worker able to do them has been alive for during the
    last UNBLOCK_AFTER_SECONDS wait for a person instead: an approval each."""
    now = now or timezone.now()
    window = now - timedelta(seconds=settings.UNBLOCK_AFTER_SECONDS)
    recent = Worker.objects.filter(revoked_at__isnull=True, last_heartbeat__gte=window)
    abilities = [set(caps or []) for caps in recent.values_list("capabilities", flat=True)]
    # A person's to-do waits for a person by design: no worker would unblock it.
    waiting = (
        Task.objects.filter(status=TaskStatus.PENDING, updated_at__lte=window)
        .exclude(kind__in=task_kinds.person_kinds())
        .only("pk", "title", "required_capabilities", "updated_at")
    )
    asked = []
    for task in waiting.order_by(*CLAIM_ORDER):
        if not any(set(task.required_capabilities or []) <= ability for ability in abilities):
            approval = _ask_to_unblock(task, abilities, now)
            if approval is not None:
                asked.append(approval)
    return asked


def _ask_to_unblock(task: Task, abilities: list[set[str]], now: datetime) -> Approval | None:
    reason = _unblock_reason(task, abilities, now)
    waited = int((now - task.updated_at).total_seconds())
    with transaction.atomic():
        held = hold_for_approval(task, reason)
        if held is None:
            return None  # claimed or changed meanwhile
        return request_approval(
            action=UNBLOCK_ACTION,
            requested_by=service_account(SELFHEAL_SERVICE),
            reason=reason,
            subject=held,
            proposal={
                "task_id": held.pk,
                "required_capabilities": held.required_capabilities,
                "missing_capabilities": _missing(held, abilities),
                "waited_seconds": waited,
            },
        )


def _missing(task: Task, abilities: list[set[str]]) -> list[str]:
    return sorted(set(task.required_capabilities or []) - set().union(*abilities))


def _unblock_reason(task: Task, abilities: list[set[str]], now: datetime) -> str:
    waited = _duration(now - task.updated_at)
    required = ", ".join(task.required_capabilities or [])
    missing = _missing(task, abilities)
    if not required:
        lack = "no worker has been alive"
    elif missing:
        lack = f"no live worker has {', '.join(missing)}"
    else:
        lack = f"no single live worker has all of {required}"
    start = f"bin/manage run_worker --capabilities {','.join(task.required_capabilities or [])}"
    return (
        f"Task #{task.pk} “{task.title}” has waited {waited} for a worker and {lack}. "
        f"Approve once a capable worker is running ({start.strip()}) to put it back in the "
        "queue; reject to cancel the task."
    )


def _duration(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} minutes"
    return f"{minutes // 60} hours {minutes % 60} minutes"


def unblock_decided(approval: Approval) -> None:
    """Approved: the task goes back to the queue (a capable worker is coming).
    Rejected or expired: it is cancelled."""
    task = Task.objects.filter(pk=int(approval.object_id or 0)).first()
    if task is None or task.status != TaskStatus.WAITING_APPROVAL:
        return  # moved by someone else meanwhile
    approved = approval.status == Approval.Status.APPROVED
    with contextlib.suppress(TransitionRefused):  # moved meanwhile: nothing left to do
        transition(
            task,
            TaskStatus.PENDING if approved else TaskStatus.CANCELLED,
            actor=approval.decided_by,
            reason=f"Approval #{approval.pk} was {approval.status}.",
        )


def register_waiters() -> None:
    register_waiter(UNBLOCK_ACTION, unblock_decided)
