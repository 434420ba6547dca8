"""The playbook base: at most ten steps, each declaring one safe action.

A playbook is a class whose steps are methods marked with `@step(title, action=...)`.
Two rules hold at class definition (and again at registration), so a playbook that
breaks them cannot exist: no more than `MAX_STEPS` steps, and every action is in
`SAFE_ACTIONS`. At run time a step can only change rows through the `PlaybookRun`
methods named after the actions, and only through the one its step declared.

Every row a playbook changes is snapshotted before the change (model label, pk and
the changed fields' values), together with the values the change set, so that
`rollback()` can restore it later and can tell whether anyone touched it since.
Nothing in `SAFE_ACTIONS` destroys data: a reset task can be put back, a created
task can be cancelled, an approval request only asks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as time_of_day
from decimal import Decimal
from typing import Any, ClassVar
from uuid import UUID

from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from controlplane import audit
from controlplane.approvals import request_approval
from controlplane.live import publish
from controlplane.models import Approval
from controlplane.tiers import Tier
from selfheal.engine import ENGINE_CHANGED, ENGINE_GROUP, create_task, transition
from selfheal.error_patterns import fix_task_dedupe_key
from selfheal.models import OPEN_STATUSES, TRANSITIONS, PlaybookExecution, Task, TaskStatus

log = logging.getLogger(__name__)

MAX_STEPS = 10

# The only things a playbook step may do. None of them destroys anything.
SAFE_ACTIONS: dict[str, str] = {
    "read": "Reads and measures; changes nothing.",
    "reset_task_to_pending": "Moves a blocked or stuck task back to pending (rollback undoes it).",
    "create_fix_task": "Opens a task to fix an error pattern (rollback cancels it).",
    "request_approval": "Asks a person to approve work that is over a cap.",
}

SEVERITY_RANK = {"ok": 0, "warning": 1, "critical": 2}

# Executions are published to the Self-heal pages' group, next to the engine's events.
SELFHEAL_GROUP = ENGINE_GROUP
EXECUTION_EVENT = "playbook.changed"
REPAIR_OVER_CAP_ACTION = "selfheal.repair_over_cap"
SERVICE_ACCOUNT = "service-selfheal"
FIX_TASK_KIND = "fix_error_pattern"

# Models a rollback may write to: the ones playbook actions change.
ROLLBACK_MODELS = {"selfheal.task"}


class PlaybookError(Exception):
    """Something a person should read: the message says what and why."""


class PlaybookDefinitionError(PlaybookError):
    """A playbook that breaks the rules (too many steps, an action not allowed)."""


class UnsafeActionError(PlaybookError):
    """A step tried an action it did not declare."""


class UnknownPlaybook(PlaybookError, LookupError):
    pass


class RollbackRefused(PlaybookError):
    """The rollback did not happen, and nothing was changed."""


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    action: str


def step[StepMethod: Callable[..., Any]](
    title: str, *, action: str
) -> Callable[[StepMethod], StepMethod]:
    """Mark a playbook method as a step that takes only `action`."""
    _check_action(action, where=title)

    def mark(method: StepMethod) -> StepMethod:
        method._playbook_step = Step(name=method.__name__, title=title, action=action)  # type: ignore[attr-defined]
        return method

    return mark


def _check_action(action: str, *, where: str) -> None:
    if action not in SAFE_ACTIONS:
        raise PlaybookDefinitionError(
            f"{where}: action '{action}' is not a safe playbook action "
            f"(allowed: {', '.join(sorted(SAFE_ACTIONS))})."
        )


def validate_steps(name: str, steps: Iterable[Step]) -> tuple[Step, ...]:
    steps = tuple(steps)
    if len(steps) > MAX_STEPS:
        raise PlaybookDefinitionError(
            f"Playbook '{name}' has {len(steps)} steps; a playbook has at most {MAX_STEPS}."
        )
    for each in steps:
        _check_action(each.action, where=f"Playbook '{name}', step '{each.name}'")
    return steps


class Playbook:
    """A named, bounded sequence of steps. Subclasses mark their steps with `@step`."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # Listed on the Self-heal page; an internal playbook (run by an approval) is not.
    listed: ClassVar[bool] = True
    steps: ClassVar[tuple[Step, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        collected: dict[str, Step] = {}
        for klass in reversed(cls.__mro__):
            for attribute, value in vars(klass).items():
                marked = getattr(value, "_playbook_step", None)
                if isinstance(marked, Step):
                    collected[attribute] = marked
                elif attribute in collected:
                    del collected[attribute]  # overridden without being a step
        cls.steps = validate_steps(cls.name or cls.__name__, collected.values())

    def verify(self, run: PlaybookRun) -> dict[str, Any]:
        """After the steps: check the result. The default has nothing to check."""
        return {"summary": "Read-only: nothing was changed, so there is nothing to verify."}

    def summarize(self, run: PlaybookRun) -> str:
        return run.default_summary()

    def execute(
        self,
        *,
        user: Any = None,
        dry_run: bool = False,
        trigger: str = PlaybookExecution.Trigger.MANUAL,
        params: dict[str, Any] | None = None,
    ) -> PlaybookExecution:
        execution = PlaybookExecution.objects.create(
            playbook=self.name,
            dry_run=dry_run,
            trigger=trigger,
            started_by=user if getattr(user, "pk", None) else None,
        )
        run = PlaybookRun(self, execution, user=user, dry_run=dry_run, params=params or {})
        started = time.monotonic()
        status = PlaybookExecution.Status.SUCCEEDED
        try:
            with audit.acting_as(user):
                for each in self.steps:
                    run.perform_step(each, getattr(self, each.name))
                if dry_run:
                    run.verification = {
                        "summary": "Dry run: nothing was changed, so there is nothing to verify."
                    }
                else:
                    run.verification = self.verify(run)
            if run.approvals:
                status = PlaybookExecution.Status.NEEDS_APPROVAL
        except Exception as exc:
            log.exception("playbook %s failed (execution %s)", self.name, execution.pk)
            status = PlaybookExecution.Status.FAILED
            execution.error = f"{type(exc).__name__}: {exc}"
        run.current_step = None
        execution.status = status
        execution.summary = (
            self.summarize(run) if status != PlaybookExecution.Status.FAILED else execution.error
        )
        execution.finished_at = timezone.now()
        execution.duration_ms = int((time.monotonic() - started) * 1000)
        run.save_progress(final=True)
        publish(SELFHEAL_GROUP, EXECUTION_EVENT, execution_id=execution.pk, status=execution.status)
        return execution


class PlaybookRun:
    """One execution in progress: findings, actions, snapshots and the step running.

    The methods named after a safe action are the only way a step changes a row;
    each refuses unless the running step declared that action.
    """

    def __init__(
        self,
        playbook: Playbook,
        execution: PlaybookExecution,
        *,
        user: Any,
        dry_run: bool,
        params: dict[str, Any],
    ) -> None:
        self.playbook = playbook
        self.execution = execution
        self.user = user if getattr(user, "pk", None) else None
        self.dry_run = dry_run
        self.params = params
        self.now = timezone.now()
        self.started = time.monotonic()
        self.findings: list[dict[str, Any]] = []
        self.actions: list[dict[str, Any]] = []
        self.snapshots: list[dict[str, Any]] = []
        self.verification: dict[str, Any] = {}
        self.approvals: list[int] = []
        self.current_step: Step | None = None
        # What steps hand to later steps (e.g. kinds over their cap).
        self.notes: dict[str, Any] = {}

    # --- bookkeeping ---------------------------------------------------------------

    def perform_step(self, each: Step, method: Callable[[PlaybookRun], None]) -> None:
        self.current_step = each
        header = {
            "step": each.name,
            "action": "step",
            "declared": each.action,
            "description": each.title,
            "performed": True,
        }
        self.actions.append(header)
        started = time.monotonic()
        try:
            method(self)
        finally:
            header["duration_ms"] = int((time.monotonic() - started) * 1000)
            self.current_step = None
            self.save_progress()

    def add_findings(self, findings: Iterable[dict[str, Any]]) -> None:
        self.findings.extend(findings)

    def note(self, description: str, **details: Any) -> None:
        """Record something a step decided (nothing qualified, over a cap, skipped)."""
        self._record("read", description, performed=True, **details)

    def _record(self, action: str, description: str, *, performed: bool, **details: Any) -> None:
        self.actions.append(
            {
                "step": self.current_step.name if self.current_step else "",
                "action": action,
                "description": description,
                "performed": performed,
                **details,
            }
        )

    def save_progress(self, *, final: bool = False) -> None:
        """Write the record so far, so that a crash leaves the snapshots it took."""
        execution = self.execution
        execution.findings = self.findings
        execution.actions = self.actions
        execution.snapshots = self.snapshots
        execution.verification = self.verification
        fields = ["findings", "actions", "snapshots", "verification"]
        if final:
            fields += ["status", "summary", "error", "finished_at", "duration_ms"]
        execution.save(update_fields=fields)

    @contextmanager
    def changing(self) -> Iterator[None]:
        """Changes and the snapshots that undo them commit together."""
        with transaction.atomic():
            yield
            if not self.dry_run:
                self.save_progress()

    def _require(self, action: str) -> None:
        declared = self.current_step.action if self.current_step else None
        if declared != action:
            where = f"step '{self.current_step.name}'" if self.current_step else "outside a step"
            raise UnsafeActionError(
                f"Playbook '{self.playbook.name}', {where} declared "
                f"'{declared}' but tried '{action}'; refused."
            )

    @property
    def requester(self) -> Any:
        """Who asks for approvals: the user, else the self-heal service account."""
        return self.user or service_account()

    # --- the safe actions ----------------------------------------------------------

    def reset_task_to_pending(self, task_id: int, *, qualifies: Q, reason: str) -> bool:
        """Move a task back to pending if it still `qualifies` (checked under a lock)."""
        self._require("reset_task_to_pending")
        target = {"model": "selfheal.task", "pk": task_id}
        if self.dry_run:
            task = Task.objects.filter(Q(pk=task_id) & qualifies).only("title", "status").first()
            if task is not None:
                self._record(
                    "reset_task_to_pending",
                    f"Would reset task #{task_id} '{task.title}' from {task.status} to pending.",
                    performed=False,
                    target=target,
                )
            return task is not None
        with transaction.atomic():
            task = Task.objects.select_for_update().filter(Q(pk=task_id) & qualifies).first()
            if task is None:
                self.note(f"Task #{task_id} no longer qualifies; left alone.", target=target)
                return False
            before = row_values(task)
            previous = task.status
            transition(task, TaskStatus.PENDING, actor=self.user, reason=reason)
            after = row_values(Task.objects.get(pk=task_id))
            self._snapshot("selfheal.task", task_id, before, after)
            self._record(
                "reset_task_to_pending",
                f"Reset task #{task_id} '{task.title}' from {previous} to pending.",
                performed=True,
                target=target,
            )
        return True

    def create_fix_task(self, pattern: dict[str, Any]) -> Task | None:
        """Open a task to fix an error pattern, unless one is already open for it."""
        self._require("create_fix_task")
        key = fix_task_dedupe_key(str(pattern["fingerprint"]))
        label = str(pattern.get("message") or pattern["fingerprint"])[:80]
        open_task = Task.objects.filter(dedupe_key=key, status__in=OPEN_STATUSES).first()
        if open_task is not None:
            self.note(
                f"Task #{open_task.pk} is already open for error pattern '{label}'.",
                target={"model": "selfheal.task", "pk": open_task.pk},
            )
            return None
        if self.dry_run:
            self._record(
                "create_fix_task",
                f"Would open a task to fix error pattern '{label}' "
                f"({pattern.get('count')} errors).",
                performed=False,
                fingerprint=pattern["fingerprint"],
            )
            return None
        with transaction.atomic():
            task = create_task(
                title=f"Fix error: {label}",
                kind=FIX_TASK_KIND,
                payload={"error_pattern": pattern, "execution": self.execution.pk},
                source=Task.Source.SELFHEAL,
                dedupe_key=key,
                actor=self.user,
            )
            if task.payload.get("execution") != self.execution.pk:
                # Someone opened one between our look and our write: theirs stands.
                self.note(
                    f"Task #{task.pk} is already open for error pattern '{label}'.",
                    target={"model": "selfheal.task", "pk": task.pk},
                )
                return None
            self._snapshot("selfheal.task", task.pk, {}, row_values(task, ["status"]), created=True)
            self._record(
                "create_fix_task",
                f"Opened task #{task.pk} to fix error pattern '{label}'.",
                performed=True,
                target={"model": "selfheal.task", "pk": task.pk},
                fingerprint=pattern["fingerprint"],
            )
        return task

    def request_approval(
        self, *, kind: str, title: str, count: int, cap: int, **proposal: Any
    ) -> None:
        """Ask an Operator to approve repairing all `count` items of `kind`."""
        self._require("request_approval")
        reason = (
            f"{count} {title} qualify for repair, more than the cap of {cap}; "
            f"none were repaired. Approve to repair all {count}."
        )
        if self.dry_run:
            self._record(
                "request_approval", f"Would ask for approval: {reason}", performed=False, kind=kind
            )
            return
        approval = request_approval(
            action=REPAIR_OVER_CAP_ACTION,
            requested_by=self.requester,
            reason=reason,
            subject=self.execution,
            required_tier=Tier.OPERATOR,
            proposal={"kind": kind, "count": count, "cap": cap, **proposal},
        )
        self.approvals.append(approval.pk)
        self._record(
            "request_approval",
            f"Asked for approval #{approval.pk}: {reason}",
            performed=True,
            kind=kind,
            target={"model": "controlplane.approval", "pk": approval.pk},
        )

    def _snapshot(
        self,
        model: str,
        pk: Any,
        before: dict[str, Any],
        after: dict[str, Any],
        *,
        created: bool = False,
    ) -> None:
        changed = (
            sorted(after) if created else sorted(k for k in after if after[k] != before.get(k))
        )
        self.snapshots.append(
            {
                "model": model,
                "pk": pk,
                "created": created,
                "fields": {k: before.get(k) for k in changed} if not created else {},
                "after": {k: after[k] for k in changed},
            }
        )

    def default_summary(self) -> str:
        done = [a for a in self.actions if a["action"] not in ("step", "read") and a["performed"]]
        would = [
            a for a in self.actions if a["action"] not in ("step", "read") and not a["performed"]
        ]
        worst = worst_severity(self.findings)
        parts = [f"Worst finding: {worst}."] if self.findings else []
        if self.dry_run:
            parts.append(f"Dry run: {len(would)} action(s) would be taken; nothing changed.")
        else:
            parts.append(f"{len(done)} action(s) taken.")
        if self.approvals:
            parts.append(f"Waiting for {len(self.approvals)} approval(s).")
        return " ".join(parts)


def worst_severity(findings: Iterable[dict[str, Any]]) -> str:
    rank = max((SEVERITY_RANK.get(f.get("severity", "ok"), 0) for f in findings), default=0)
    return next(name for name, value in SEVERITY_RANK.items() if value == rank)


def service_account() -> Any:
    """The inactive account that stands for self-heal in approvals it asks for."""
    users = get_user_model()
    account, created = users.objects.get_or_create(
        username=SERVICE_ACCOUNT, defaults={"is_active": False}
    )
    if created:
        account.set_unusable_password()
        account.save(update_fields=["password"])
    return account


# --- snapshots and rollback --------------------------------------------------------


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


def rollback(execution: PlaybookExecution, *, user: Any) -> PlaybookExecution:
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
    publish(SELFHEAL_GROUP, EXECUTION_EVENT, execution_id=execution.pk, status=execution.status)
    log.info("rolled back execution %s (%s rows)", execution.pk, len(restored))
    return execution


def _restore(execution: PlaybookExecution, user: Any) -> list[str]:
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
    execution: PlaybookExecution, snap: dict[str, Any], instance: models.Model, user: Any
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


def approvals_for(execution: PlaybookExecution) -> models.QuerySet[Approval]:
    return Approval.objects.filter(
        action=REPAIR_OVER_CAP_ACTION,
        content_type=ContentType.objects.get_for_model(PlaybookExecution),
        object_id=str(execution.pk),
    )


# --- the registry ----------------------------------------------------------------

_registry: dict[str, type[Playbook]] = {}


def register_playbook[PlaybookClass: type[Playbook]](cls: PlaybookClass) -> PlaybookClass:
    """Class decorator: make the playbook runnable by name (checking its rules again)."""
    if not cls.name:
        raise PlaybookDefinitionError(f"{cls.__name__} has no name.")
    validate_steps(cls.name, cls.steps)
    _registry[cls.name] = cls
    return cls


def get_playbook(name: str) -> Playbook:
    try:
        return _registry[name]()
    except KeyError:
        raise UnknownPlaybook(
            f"No playbook named '{name}' (known: {', '.join(sorted(_registry))})."
        ) from None


def playbooks() -> list[type[Playbook]]:
    return [cls for cls in _registry.values() if cls.listed]
