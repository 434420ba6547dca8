"""Repair common issues, within caps, and prove it by diagnosing again.

Three kinds of repair, each with a cap: reset blocked tasks, reset tasks running past
their lease, open fix tasks for the top error patterns. When more items of a kind
qualify than its cap allows, none of that kind is repaired: an Operator is asked to
approve repairing all of them (the approval lists exactly which), and once approved
the waiter below repairs them in an execution of its own, snapshotted like any other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from controlplane.approvals import register_waiter
from controlplane.models import Approval
from selfheal.error_patterns import (
    ErrorPattern,
    fix_task_dedupe_key,
    registered_error_sources,
    top_error_patterns,
)
from selfheal.models import OPEN_STATUSES, PlaybookExecution, Task, TaskStatus
from selfheal.playbooks.checks import ERROR_PATTERN_LIMIT, ERROR_PATTERN_WARNING_COUNT
from selfheal.playbooks.diagnose import diagnose_system
from selfheal.playbooks.executor import (
    REPAIR_OVER_CAP_ACTION,
    Playbook,
    PlaybookRun,
    approvals_for,
    get_playbook,
    register_playbook,
)
from selfheal.playbooks.findings import SEVERITY_RANK
from selfheal.playbooks.steps import step

log = logging.getLogger(__name__)

BLOCKED_RESET_CAP = 10
STUCK_RESET_CAP = 5
FIX_TASK_CAP = 3

# Changes commit in batches with the snapshots that undo them.
CHANGE_BATCH = 50


@dataclass(frozen=True)
class RepairKind:
    name: str
    title: str  # plural, as in "12 blocked tasks qualify"
    cap: int


RESET_BLOCKED = RepairKind("reset_blocked_tasks", "blocked tasks", BLOCKED_RESET_CAP)
RESET_STUCK = RepairKind(
    "reset_stuck_running_tasks", "tasks running past their lease", STUCK_RESET_CAP
)
CREATE_FIX_TASKS = RepairKind("create_fix_tasks", "error patterns without a fix task", FIX_TASK_CAP)
KINDS = {kind.name: kind for kind in (RESET_BLOCKED, RESET_STUCK, CREATE_FIX_TASKS)}


def blocked(now: Any) -> Q:
    return Q(status=TaskStatus.BLOCKED)


def stuck_running(now: Any) -> Q:
    return Q(status=TaskStatus.RUNNING, lease_expires_at__lt=now)


def patterns_needing_fix_tasks() -> list[ErrorPattern]:
    """Frequent recent error patterns with no open fix task, most frequent first."""
    report = top_error_patterns(limit=ERROR_PATTERN_LIMIT)
    frequent = [p for p in report.patterns if p.count >= ERROR_PATTERN_WARNING_COUNT]
    keys = [fix_task_dedupe_key(p.fingerprint) for p in frequent]
    open_keys = set(
        Task.objects.filter(dedupe_key__in=keys, status__in=OPEN_STATUSES).values_list(
            "dedupe_key", flat=True
        )
    )
    return [p for p, key in zip(frequent, keys, strict=True) if key not in open_keys]


def pending_over_cap_approval(kind: RepairKind) -> Approval | None:
    return (
        Approval.objects.filter(
            action=REPAIR_OVER_CAP_ACTION,
            status=Approval.Status.PENDING,
            expires_at__gt=timezone.now(),
            proposal__kind=kind.name,
        )
        .order_by("-created_at")
        .first()
    )


@register_playbook
class RepairPlaybook(Playbook):
    name = "repair"
    title = "Repair common issues"
    description = (
        f"Reset blocked tasks (at most {BLOCKED_RESET_CAP}) and tasks running past their "
        f"lease (at most {STUCK_RESET_CAP}), open fix tasks for the top error patterns "
        f"(at most {FIX_TASK_CAP}); over a cap it asks for approval. Then diagnoses again."
    )

    @step("Diagnose the system", action="read")
    def diagnose(self, run: PlaybookRun) -> None:
        run.add_findings(f.as_record() for f in diagnose_system(run.now))

    @step("Reset blocked tasks", action="reset_task_to_pending")
    def reset_blocked_tasks(self, run: PlaybookRun) -> None:
        self._reset_tasks(run, RESET_BLOCKED, blocked(run.now))

    @step("Reset tasks running past their lease", action="reset_task_to_pending")
    def reset_stuck_running_tasks(self, run: PlaybookRun) -> None:
        self._reset_tasks(run, RESET_STUCK, stuck_running(run.now))

    @step("Open fix tasks for the top error patterns", action="create_fix_task")
    def create_fix_tasks(self, run: PlaybookRun) -> None:
        patterns = self._patterns(run)
        if patterns is None:
            return
        if not patterns:
            run.note(
                "No frequent error pattern lacks a fix task."
                if registered_error_sources()
                else "No error source is registered, so there are no error patterns to fix."
            )
            return
        for pattern in patterns:
            with run.changing():
                run.create_fix_task(pattern.as_evidence())

    @step("Ask for approval of what is over a cap", action="request_approval")
    def request_approvals(self, run: PlaybookRun) -> None:
        over = run.notes.get("over_cap", {})
        if not over:
            run.note("Nothing is over its cap.")
        for kind_name, proposal in over.items():
            kind = KINDS[kind_name]
            waiting = pending_over_cap_approval(kind)
            if waiting is not None:
                # Auto-heal runs repair again and again: one open question is enough.
                run.note(
                    f"Approval #{waiting.pk} to repair {kind.title} is already pending; "
                    "not asking again.",
                    kind=kind.name,
                    target={"model": "controlplane.approval", "pk": waiting.pk},
                )
                continue
            run.request_approval(kind=kind.name, title=kind.title, cap=kind.cap, **proposal)

    # --- choosing what to repair ----------------------------------------------------

    def _task_ids(self, run: PlaybookRun, kind: RepairKind, qualifies: Q) -> list[int] | None:
        """The tasks to repair, or None when over the cap (noted for approval)."""
        candidates = Task.objects.filter(qualifies).order_by("created_at", "id")
        ids = list(candidates.values_list("pk", flat=True)[: kind.cap + 1])
        if len(ids) <= kind.cap:
            return ids
        every = list(candidates.values_list("pk", flat=True))
        self._over_cap(run, kind, len(every), task_ids=every)
        return None

    def _patterns(self, run: PlaybookRun) -> list[ErrorPattern] | None:
        patterns = patterns_needing_fix_tasks()
        if len(patterns) <= CREATE_FIX_TASKS.cap:
            return patterns
        self._over_cap(
            run, CREATE_FIX_TASKS, len(patterns), patterns=[p.as_evidence() for p in patterns]
        )
        return None

    def _over_cap(self, run: PlaybookRun, kind: RepairKind, count: int, **items: Any) -> None:
        run.note(
            f"{count} {kind.title} qualify, more than the cap of {kind.cap}: none repaired; "
            "approval will be requested.",
            kind=kind.name,
            count=count,
            cap=kind.cap,
        )
        run.notes.setdefault("over_cap", {})[kind.name] = {"count": count, **items}

    def _reset_tasks(self, run: PlaybookRun, kind: RepairKind, qualifies: Q) -> None:
        ids = self._task_ids(run, kind, qualifies)
        if ids is None:
            return
        if not ids:
            run.note(f"No {kind.title}.")
            return
        reason = f"{self.title} (playbook execution #{run.execution.pk}): {kind.title}."
        for start in range(0, len(ids), CHANGE_BATCH):
            with run.changing():
                for task_id in ids[start : start + CHANGE_BATCH]:
                    run.reset_task_to_pending(task_id, qualifies=qualifies, reason=reason)

    # --- verification ------------------------------------------------------------------

    def verify(self, run: PlaybookRun) -> dict[str, Any]:
        """Diagnose again and say, check by check, what improved."""
        after = {f.check: f.as_record() for f in diagnose_system()}
        before = {f["check"]: f for f in run.findings}
        checks = []
        for name, finding in after.items():
            earlier = before.get(name)
            was = earlier["severity"] if earlier else None
            change = (
                "new"
                if was is None
                else "improved"
                if SEVERITY_RANK[finding["severity"]] < SEVERITY_RANK[was]
                else "worsened"
                if SEVERITY_RANK[finding["severity"]] > SEVERITY_RANK[was]
                else "unchanged"
            )
            checks.append(
                {
                    "check": name,
                    "before": was,
                    "after": finding["severity"],
                    "change": change,
                    "evidence": _evidence_changes(
                        earlier["evidence"] if earlier else {}, finding["evidence"]
                    ),
                    "summary": finding["summary"],
                }
            )
        improved = [c for c in checks if c["change"] == "improved"]
        worsened = [c for c in checks if c["change"] == "worsened"]
        parts = [
            f"{len(improved)} check(s) improved"
            + (
                ": " + ", ".join(f"{c['check']} {c['before']} → {c['after']}" for c in improved)
                if improved
                else ""
            ),
        ]
        if worsened:
            parts.append(
                f"{len(worsened)} worsened: "
                + ", ".join(f"{c['check']} {c['before']} → {c['after']}" for c in worsened)
            )
        parts.append(f"{len(checks) - len(improved) - len(worsened)} unchanged")
        # The whole findings too: the Self-heal page shows the state the repair left.
        return {
            "summary": "; ".join(parts) + ".",
            "checks": checks,
            "findings": list(after.values()),
        }

    def summarize(self, run: PlaybookRun) -> str:
        done = [a for a in run.actions if a["action"] not in ("step", "read") and a["performed"]]
        counts: dict[str, int] = {}
        for action in done:
            counts[action["action"]] = counts.get(action["action"], 0) + 1
        would = [
            a for a in run.actions if a["action"] not in ("step", "read") and not a["performed"]
        ]
        if run.dry_run:
            head = f"Dry run: would take {len(would)} action(s); nothing changed."
        else:
            taken = ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in counts.items())
            head = f"Took {len(done)} action(s)" + (f" ({taken})" if taken else "") + "."
        if run.approvals:
            head += f" Waiting for {len(run.approvals)} approval(s) for work over a cap."
        if run.verification.get("summary") and not run.dry_run:
            head += " " + run.verification["summary"]
        return head


def _evidence_changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    """The numbers that moved: {name: [before, after]}."""
    return {
        name: [before.get(name), value]
        for name, value in after.items()
        if name != "check_ms"
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and before.get(name) != value
    }


@register_playbook
class ApprovedRepairPlaybook(RepairPlaybook):
    """Repairs all the items an approval listed (those that still qualify), no cap."""

    name = "repair_approved"
    title = "Repair what an approval allowed"
    listed = False

    def _approved(self, run: PlaybookRun, kind: RepairKind) -> dict[str, Any] | None:
        return run.params if run.params.get("kind") == kind.name else None

    def _task_ids(self, run: PlaybookRun, kind: RepairKind, qualifies: Q) -> list[int] | None:
        approved = self._approved(run, kind)
        if approved is None:
            return []
        ids = [int(i) for i in approved.get("task_ids", [])]
        # Only those that still qualify; each is checked again under its lock.
        return list(
            Task.objects.filter(Q(pk__in=ids) & qualifies)
            .order_by("created_at", "id")
            .values_list("pk", flat=True)
        )

    def _patterns(self, run: PlaybookRun) -> list[ErrorPattern] | None:
        approved = self._approved(run, CREATE_FIX_TASKS)
        if approved is None:
            return []
        return [ErrorPattern.from_evidence(p) for p in approved.get("patterns", [])]


def repair_over_cap_decided(approval: Approval) -> None:
    """Waiter: approved, repair every item the approval listed; otherwise record that
    nothing was repaired. Either way, the asking execution is settled once none of
    its approvals is pending."""
    if approval.action != REPAIR_OVER_CAP_ACTION:
        return
    # Claim the approval's outcome, so a repeated call repairs nothing twice.
    if not Approval.objects.filter(pk=approval.pk, outcome="").update(outcome="Repairing…"):
        return
    kind = KINDS.get(str(approval.proposal.get("kind")))
    if approval.status != Approval.Status.APPROVED or kind is None:
        outcome = f"Nothing repaired: the request was {approval.status}."
    else:
        execution = get_playbook(ApprovedRepairPlaybook.name).execute(
            user=approval.decided_by,
            trigger=PlaybookExecution.Trigger.MANUAL,
            params={**approval.proposal, "approval": approval.pk},
        )
        outcome = f"Execution #{execution.pk} ({execution.status}): {execution.summary}"
    Approval.objects.filter(pk=approval.pk).update(outcome=outcome[:2000])
    _settle_asking_execution(approval, outcome)


def _settle_asking_execution(approval: Approval, outcome: str) -> None:
    asking = PlaybookExecution.objects.filter(pk=int(approval.object_id or 0)).first()
    if asking is None:
        return
    with transaction.atomic():
        asking = PlaybookExecution.objects.select_for_update().get(pk=asking.pk)
        asking.summary = f"{asking.summary} Approval #{approval.pk}: {outcome}".strip()
        fields = ["summary"]
        pending = approvals_for(asking).filter(status=Approval.Status.PENDING).exists()
        if asking.status == PlaybookExecution.Status.NEEDS_APPROVAL and not pending:
            asking.status = PlaybookExecution.Status.SUCCEEDED
            fields.append("status")
        asking.save(update_fields=fields)


def register_waiters() -> None:
    register_waiter(REPAIR_OVER_CAP_ACTION, repair_over_cap_decided)
