"""Snapshots and rollback: every row a playbook changes is snapshotted before the
change (model label, pk and the changed fields' values), together with the values
the change set, so that `rollback()` can restore it later and can tell whether
anyone touched it since. A rollback is all or nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import date, datetime
from datetime import time as time_of_day
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.apps import apps
from django.db import models, transaction
from django.utils import timezone

from controlplane import audit
from controlplane.live import publish
from controlplane.tiers import StaffUser
from selfheal.engine import ENGINE_CHANGED, ENGINE_GROUP, transition
from selfheal.models import TRANSITIONS, PlaybookExecution, Task, TaskStatus
from selfheal.playbooks.events import publish_execution
from selfheal.playbooks.steps import PlaybookError

log = logging.getLogger(__name__)

# Models a rollback may write to: the ones playbook actions change.
ROLLBACK_MODELS = {"selfheal.task"}


class RollbackRefused(PlaybookError):
    """The rollback did not happen, and nothing was changed."""


def snapshot(
    model: str, pk: Any, before: dict[str, Any], after: dict[str, Any], *, created: bool = False
) -> dict[str, Any]:
    """What a change did to one row, as stored in `PlaybookExecution.snapshots`: the
    changed fields' values before (`fields`, restored by a rollback) and after (`after`,
    compared to tell whether anyone touched the row since)."""
    changed = sorted(after) if created else sorted(k for k in after if after[k] != before.get(k))
    return {
        "model": model,
        "pk": pk,
        "created": created,
        "fields": {k: before.get(k) for k in changed} if not created else {},
        "after": {k: after[k] for k in changed},
    }


def _json_value(value: Any) -> Any:
    # Full precision: a rollback compares and restores these exactly.
    if isinstance(value, datetime | date | time_of_day):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    return value


def row_values(instance: models.Model, names: Iterable[str] | None = None) -> dict[str, Any]:
    """The row's values by column name, JSON-safe; `auto_now` columns are left out
    (they change on every write, which is not a change anyone made)."""
    wanted = set(names) if names is not None else None
    values: dict[str, Any] = {}
    for field in instance._meta.concrete_fields:
        if getattr(field, "auto_now", False):
            continue
        if wanted is not None and field.attname not in wanted:
            continue
        values[field.attname] = _json_value(field.value_from_object(instance))
    return values


def _python_values(model: type[models.Model], values: dict[str, Any]) -> dict[str, Any]:
    by_attname = {f.attname: f for f in model._meta.concrete_fields}
    return {name: by_attname[name].to_python(value) for name, value in values.items()}


def rollback(execution: PlaybookExecution, *, user: StaffUser) -> PlaybookExecution:
    """Restore every row the execution changed to its snapshot, all or nothing.

    Refuses (RollbackRefused, nothing changed) when any row changed since the
    execution changed it.
    """
    if not getattr(user, "pk", None) or not user.has_perm("selfheal.rollback_execution"):
        raise RollbackRefused("Your tier cannot roll back playbook executions.")
    try:
        with transaction.atomic(), audit.acting_as(user):
            restored = _restore(execution, user)
    except RollbackRefused as exc:
        audit.record(
            "playbookexecution.rollback_refused",
            execution,
            after={"reason": str(exc)},
            actor=user,
        )
        raise
    execution.refresh_from_db()
    publish_execution(execution)
    log.info("rolled back execution %s (%s rows)", execution.pk, len(restored))
    return execution


def _restore(execution: PlaybookExecution, user: StaffUser) -> list[str]:
    locked = PlaybookExecution.objects.select_for_update().get(pk=execution.pk)
    if locked.status == PlaybookExecution.Status.ROLLED_BACK:
        raise RollbackRefused(f"Execution #{locked.pk} was already rolled back.")
    if locked.dry_run:
        raise RollbackRefused(f"Execution #{locked.pk} was a dry run: it changed nothing.")
    if not locked.snapshots:
        raise RollbackRefused(
            f"Execution #{locked.pk} changed no rows: there is nothing to restore."
        )
    if not locked.can_roll_back:
        raise RollbackRefused(
            f"Execution #{locked.pk} is {locked.get_status_display().lower()}; "
            "it can be rolled back once it has finished."
        )
    rows: list[tuple[dict[str, Any], models.Model]] = []
    conflicts: list[str] = []
    for snap in locked.snapshots:
        label = f"{snap['model']} #{snap['pk']}"
        if snap["model"] not in ROLLBACK_MODELS:
            conflicts.append(f"{label}: a rollback does not restore this kind of row")
            continue
        model = apps.get_model(snap["model"])
        instance = model._base_manager.select_for_update().filter(pk=snap["pk"]).first()
        if instance is None:
            conflicts.append(f"{label} no longer exists")
            continue
        current = row_values(instance, snap["after"])
        changed = sorted(k for k, v in snap["after"].items() if current.get(k) != v)
        if changed:
            now = ", ".join(
                f"{k} is {current.get(k)!r}, was set to {snap['after'][k]!r}" for k in changed
            )
            conflicts.append(f"{label} changed since ({now})")
            continue
        target_status = "cancelled" if snap["created"] else snap["fields"].get("status")
        status = getattr(instance, "status", None)
        if (
            target_status
            and target_status != status
            and target_status not in TRANSITIONS.get(status or "", ())
        ):
            conflicts.append(f"{label} cannot move from {status} back to {target_status}")
            continue
        rows.append((snap, instance))
    if conflicts:
        raise RollbackRefused(
            f"Execution #{locked.pk} was not rolled back, and nothing was changed: "
            + "; ".join(conflicts)
            + "."
        )
    restored = [_restore_row(locked, snap, instance, user) for snap, instance in reversed(rows)]
    before_status = locked.status
    PlaybookExecution.objects.filter(pk=locked.pk).update(
        status=PlaybookExecution.Status.ROLLED_BACK,
        rolled_back_at=timezone.now(),
        rolled_back_by=user,
    )
    audit.record(
        "playbookexecution.rolled_back",
        locked,
        before={"status": before_status},
        after={"status": PlaybookExecution.Status.ROLLED_BACK, "restored": restored},
        actor=user,
    )
    return restored


def _restore_row(
    execution: PlaybookExecution, snap: dict[str, Any], instance: models.Model, user: StaffUser
) -> str:
    assert isinstance(instance, Task)
    label = f"{snap['model']} #{snap['pk']}"
    reason = f"Rollback of playbook execution #{execution.pk}."
    if snap["created"]:
        transition(instance, TaskStatus.CANCELLED, actor=user, reason=reason)
        return f"{label} cancelled (the execution had opened it)"
    before_restore = row_values(instance)
    wanted = snap["fields"].get("status")
    if wanted and wanted != instance.status and wanted != TaskStatus.RUNNING:
        # The engine moves the status (and audits the move); the snapshot's exact
        # values are written back below over whatever else the move set.
        transition(instance, wanted, actor=user, reason=reason)
    after_move = row_values(Task.objects.get(pk=snap["pk"]))
    restored = {k: before_restore[k] for k, v in after_move.items() if v != before_restore[k]}
    restored.update(snap["fields"])
    Task.objects.filter(pk=snap["pk"]).update(**_python_values(Task, restored))
    if wanted == TaskStatus.RUNNING and before_restore["status"] != TaskStatus.RUNNING:
        # Running is entered only with a lease, which the engine hands out at claim:
        # here the snapshot gives the lease back as it was, so this move is audited
        # here rather than by `transition`.
        audit.record(
            "task.running",
            instance,
            before={"status": before_restore["status"]},
            after={"status": TaskStatus.RUNNING, "reason": reason},
            actor=user,
        )
        publish(ENGINE_GROUP, ENGINE_CHANGED, task_id=snap["pk"], status=TaskStatus.RUNNING)
    return f"{label} restored ({', '.join(sorted(snap['fields']))})"
