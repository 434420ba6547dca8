"""The playbook executor: runs a playbook's steps in order, records what each found
and did, and offers the steps the safe actions as methods.

At run time a step can only change rows through the `PlaybookRun` methods named
after the actions, and only through the one its step declared; every change is
snapshotted (`selfheal.playbooks.snapshots`) in the same transaction, so a crash
leaves what a rollback needs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from django.contrib.contenttypes.models import ContentType
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from controlplane import audit
from controlplane.approvals import request_approval
from controlplane.models import Approval
from controlplane.service_accounts import service_account
from controlplane.tiers import StaffUser, Tier
from selfheal.engine import SELFHEAL_SERVICE, create_task, transition
from selfheal.error_patterns import fix_task_dedupe_key
from selfheal.models import OPEN_STATUSES, PlaybookExecution, Task, TaskStatus
from selfheal.playbooks.events import publish_execution
from selfheal.playbooks.findings import worst_severity
from selfheal.playbooks.snapshots import row_values, snapshot
from selfheal.playbooks.steps import (
    PlaybookDefinitionError,
    PlaybookError,
    Step,
    collect_steps,
    validate_steps,
)

log = logging.getLogger(__name__)

REPAIR_OVER_CAP_ACTION = "selfheal.repair_over_cap"
FIX_TASK_KIND = "fix_error_pattern"


class UnsafeActionError(PlaybookError):
    """A step tried an action it did not declare."""


class UnknownPlaybook(PlaybookError, LookupError):
    pass


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
        cls.steps = collect_steps(cls)

    def verify(self, run: PlaybookRun) -> dict[str, Any]:
        """After the steps: check the result. The default has nothing to check."""
        return {"summary": "Read-only: nothing was changed, so there is nothing to verify."}

    def summarize(self, run: PlaybookRun) -> str:
        return run.default_summary()

    def execute(
        self,
        *,
        user: StaffUser | None = None,
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
        publish_execution(execution)
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
        user: StaffUser | None,
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
    def requester(self) -> StaffUser:
        """Who asks for approvals: the user, else the self-heal service account."""
        return self.user or service_account(SELFHEAL_SERVICE)

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
            self.snapshots.append(snapshot("selfheal.task", task_id, before, after))
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
            self.snapshots.append(
                snapshot("selfheal.task", task.pk, {}, row_values(task, ["status"]), created=True)
            )
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
