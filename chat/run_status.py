"""A run's status changes here and nowhere else.

`move_run()` moves a run along `chat.models.TRANSITIONS`: one conditional UPDATE on
the statuses the run may come from (narrowed by the caller, and by `where`), so a run
that was stopped or declared lost elsewhere is never written back to life by a worker
that was slow to notice; then, in the same transaction, the `status` event and the
events that go with the move, and an audit event when a person made it (a stop, a
resume after an approval). `end_run()` is the move to `stopped`, with the events every
stopped run emits; `pause_run()` the move to `waiting_approval`, with the events of a
run waiting for a person.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from chat import stop_reasons
from chat.budget_tracker import BudgetTracker
from chat.events import EventSpec, emit_many
from chat.guardrails import Guardrails, fingerprint
from chat.live_runs import announce_run
from chat.models import (
    ACTIVE_STATUSES,
    WORKING_STATUSES,
    Run,
    RunStatus,
    StopReason,
    StreamEvent,
    ToolExecution,
    sources_of,
)
from chat.tool_calls import tool_result_event, tool_start_event
from controlplane import audit
from controlplane.approvals import withdraw_approval
from controlplane.models import Approval
from controlplane.tiers import StaffUser

DETAIL_LENGTH = 300  # Run.status_detail's max_length


class RunMoveRefused(ValueError):
    """A move the transition table does not allow: a programming error, nothing written."""


def status_event(status: str, detail: str, clock_since: float | None = None) -> EventSpec:
    data: dict[str, Any] = {"status": str(status), "detail": detail}
    if clock_since is not None:
        data["clock_since"] = clock_since
    return StreamEvent.Type.STATUS, data


def move_run(
    run_id: int,
    to: RunStatus,
    detail: str,
    *,
    sources: Iterable[str] | None = None,
    where: Q | None = None,
    fields: dict[str, Any] | None = None,
    then: Callable[[], list[EventSpec]] | None = None,
    announce: bool = True,
    actor: StaffUser | None = None,
    audit_as: str = "",
    clock_since: float | None = None,
) -> bool:
    """Move run `run_id` to `to` if it is in one of `sources` (by default every status
    the table lets reach `to`) and matches `where`, writing `fields` with it. Then emit
    the `status` event (unless `announce` is false: a claim, whose first step says it)
    followed by the events `then` returns, and audit the move as `run.<audit_as>` when
    given. `clock_since` (a working run's wall-clock origin) goes into the status
    event, for the page to tick the clock between events. Whether this call moved it:
    of two racing callers, only one does."""
    allowed = sources_of(to)
    starts = allowed if sources is None else frozenset(str(s) for s in sources)
    if not starts <= allowed:
        raise RunMoveRefused(
            f"A run cannot become {to} from {', '.join(sorted(starts - allowed))}; "
            f"only from {', '.join(sorted(allowed)) or 'nowhere'}."
        )
    rows = Run.objects.filter(where or Q(), pk=run_id, status__in=starts)
    changed = {"status": to, "status_detail": detail[:DETAIL_LENGTH], **(fields or {})}
    if not (announce or then or audit_as):
        return bool(rows.update(**changed))  # one statement: no transaction to open
    with transaction.atomic():
        before = ""
        if audit_as:
            # A person's move: read what it was (locked), to say so in the audit trail.
            before = rows.select_for_update().values_list("status", flat=True).first() or ""
            if not before:
                return False
        if not rows.update(**changed):
            return False
        events = [status_event(to, detail[:DETAIL_LENGTH], clock_since)] if announce else []
        if then is not None:
            events += then()
        if audit_as:
            audit.record(
                f"run.{audit_as}",
                Run(pk=run_id),
                before={"status": before},
                after={"status": str(to), "detail": detail[:DETAIL_LENGTH]},
                actor=actor,
                target_repr=f"Run #{run_id}",
            )
        emit_many(run_id, events)
        if announce:
            session_id, stop_reason = (
                Run.objects.filter(pk=run_id).values_list("session_id", "stop_reason").get()
            )
            announce_run(run_id, session_id, to, stop_reason)
    return True


def record_progress(run_id: int, fields: dict[str, Any]) -> bool:
    """Write a working run's usage and heartbeat, its status unchanged. Whether the run
    is still active (a run stopped or declared lost elsewhere is left as it is)."""
    if "status" in fields:
        raise RunMoveRefused("A status change goes through move_run, not record_progress.")
    return bool(Run.objects.filter(pk=run_id, status__in=ACTIVE_STATUSES).update(**fields))


def end_run(
    run_id: int,
    reason: str,
    detail: str,
    *,
    statuses: Iterable[str],
    error: str = "",
    context: dict[str, Any] | None = None,
    usage: dict[str, Any] | None = None,
    where: Q | None = None,
    actor: StaffUser | None = None,
    audit_as: str = "",
) -> bool:
    """Stop the run if it is in one of `statuses` (and matches `where`), then emit
    `status`, the final `budget` and `guardrails`, `stop_reason` and any `error`.
    Whether this call stopped it (only one caller ever does)."""
    fields: dict[str, Any] = {
        "stop_reason": reason,
        "finished_at": timezone.now(),
        **(usage or {}),
    }
    if error:
        fields["last_error"] = error

    def stopped_events() -> list[EventSpec]:
        run = Run.objects.select_related("pending_approval").get(pk=run_id)
        if run.pending_approval_id is not None:
            # A stopped run never acts on its approval: nobody may grant it any more.
            withdraw_approval(
                run.pending_approval_id, why=f"Run #{run_id} stopped: {detail}", actor=actor
            )
        events = _refuse_awaiting_calls(run, detail)
        events.append((StreamEvent.Type.BUDGET, BudgetTracker(run).meters()))
        events.append((StreamEvent.Type.GUARDRAILS, Guardrails(run).counters()))
        explained = stop_reasons.explain(reason, run=run, **(context or {}))
        events.append((StreamEvent.Type.STOP_REASON, explained))
        if error:
            events.append((StreamEvent.Type.ERROR, {"message": error}))
        return events

    return move_run(
        run_id,
        RunStatus.STOPPED,
        detail,
        sources=statuses,
        where=where,
        fields=fields,
        then=stopped_events,
        actor=actor,
        audit_as=audit_as,
    )


def pause_run(
    run: Run,
    approval: Approval,
    detail: str,
    *,
    usage: dict[str, Any],
    meters: Callable[[], dict[str, Any]],
    counters: Callable[[], dict[str, Any]],
    execution: ToolExecution | None = None,
) -> bool:
    """Pause a working run (not asked to stop) for `approval`: status waiting_approval,
    stop reason awaiting_approval, its usage written; the approval waiter resumes it.
    Emits the tool call waiting (if any), the run's meters and counters as they are
    once it paused, the approval and the stop reason. Whether this call paused it."""

    def paused_events() -> list[EventSpec]:
        events: list[EventSpec] = []
        if execution is not None:
            events.append(tool_start_event(execution))
        events.append((StreamEvent.Type.BUDGET, meters()))
        events.append((StreamEvent.Type.GUARDRAILS, counters()))
        tool = execution.tool if execution else ""
        approval_data = {
            "approval_id": approval.pk,
            "tool": tool,
            "arguments": execution.arguments if execution else approval.proposal,
            "reason": approval.reason,
        }
        events.append((StreamEvent.Type.APPROVAL, approval_data))
        explained = stop_reasons.explain(
            StopReason.AWAITING_APPROVAL, run=run, approval_id=approval.pk, tool=tool
        )
        events.append((StreamEvent.Type.STOP_REASON, explained))
        return events

    now = timezone.now()
    return move_run(
        run.pk,
        RunStatus.WAITING_APPROVAL,
        detail,
        sources=WORKING_STATUSES,
        where=Q(stop_requested=False),
        fields={
            **usage,
            "stop_reason": StopReason.AWAITING_APPROVAL,
            "pending_approval": approval,
            "heartbeat_at": now,
            "paused_at": now,  # the wait does not count against the time budget
        },
        then=paused_events,
    )


def _refuse_awaiting_calls(run: Run, why: str) -> list[EventSpec]:
    """Tool calls still waiting for an approval will not run now: close their rows.
    Their `tool_result` events, to emit."""
    events: list[EventSpec] = []
    for execution in run.tool_executions.filter(outcome=ToolExecution.Outcome.AWAITING_APPROVAL):
        execution.outcome = ToolExecution.Outcome.REFUSED
        execution.error = f"Not run: {why}"
        execution.fingerprint = fingerprint(f"{execution.tool}: {execution.error}")
        execution.finished_at = timezone.now()
        execution.save(update_fields=["outcome", "error", "fingerprint", "finished_at"])
        events.append(tool_result_event(execution))
    return events
