"""A run's lifecycle from outside the loop: opened, started, retried, stopped,
resumed after an approval, and swept up when its worker is lost.

`start_run()` opens a run (its budgets copied from the mode's `RunBudget`), stores the
person's message and enqueues `run_agent` (`chat.loop`); when the queue cannot take
it (the broker is unreachable) the run is removed again and `RunNotQueued` says why.
With a kill switch off (`chat.runs.enabled`, the agent operation's toggle) no run is
opened: `RunSwitchedOff` says which toggle. A switch turned off later stops the run.
A risky tool or a model call that needs an approval pauses the run;
`approval_decided()`, the approval waiter, resumes it where it paused or stops it.
`detect_lost_runs()` (every `CHAT_LOST_RUN_SWEEP_SECONDS`, at most 5 s) stops runs
silent for `CHAT_HEARTBEAT_TIMEOUT_SECONDS` with stop reason `worker_lost`, keeping
their events. A run whose stored budgets are out of bounds (written before they were
checked) is stopped with `invalid_budget` instead of being worked on. Every status
change goes through `chat.run_status`.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import DateTimeField, F, Q, TextField, Value
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerUnreachable

from chat import budget_bounds
from chat.budget_tracker import BudgetTracker
from chat.events import emit_many
from chat.guardrails import Guardrails
from chat.kill_switches import kill_switch_off
from chat.live_runs import announce_run
from chat.loop import RISKY_TOOL_ACTION, AgentLoop
from chat.models import (
    ACTIVE_STATUSES,
    WORKING_STATUSES,
    ChatSession,
    Message,
    Run,
    RunBudget,
    RunStatus,
    StopReason,
    StreamEvent,
)
from chat.run_status import end_run, move_run, status_event
from controlplane.approvals import register_waiter
from controlplane.background import enqueue
from controlplane.models import Approval
from controlplane.tiers import StaffUser
from routing import call_approvals
from routing.models import Mode

log = logging.getLogger(__name__)

QUEUED_GRACE = 60  # queued and not picked up in 60 heartbeat timeouts (30 min): lost too
QUEUED = "Queued: waiting for a worker to pick it up."
LIMIT_FIELDS = tuple(budget_bounds.BUDGET_BOUNDS)
# What handing work to the broker raises when it cannot be reached (kombu wraps the
# Redis client's errors; a socket error may come through as itself).
QUEUE_ERRORS = (BrokerUnreachable, OSError)


class RunNotQueued(ValueError):
    """The run could not be handed to a worker; nothing of it is left queued."""


class RunSwitchedOff(ValueError):
    """A kill switch is off, so the run is refused before it is opened: nothing is
    stored, rather than a run that starts and stops at once with `toggle_off`."""

    def __init__(self, toggle: str) -> None:
        super().__init__(
            f"The run was not started: feature toggle {toggle} is off. An Owner can "
            "switch it on on the Toggles page, then run this again."
        )
        self.toggle = toggle


# -- opening runs -------------------------------------------------------------------------------


def open_run(
    session: ChatSession,
    *,
    user: StaffUser,
    message: str,
    mode: str,
    limits: dict[str, Any] | None = None,
) -> Run:
    """A queued run with its budgets and the person's message; nothing runs it yet."""
    if mode not in Mode.values:
        raise ValueError(f"Unknown mode {mode!r}; one of {', '.join(Mode.values)}.")
    if not message.strip():
        raise ValueError("A run needs a message.")
    switched_off = kill_switch_off()
    if switched_off:
        raise RunSwitchedOff(switched_off)
    budget = RunBudget.objects.filter(mode=mode).first() or RunBudget(mode=mode)
    budgets = {name: getattr(budget, name) for name in LIMIT_FIELDS}
    budgets.update(_checked_limits(limits or {}))
    with transaction.atomic():
        run = Run.objects.create(
            session=session,
            started_by=user,
            mode=mode,
            status=RunStatus.IDLE,
            status_detail=QUEUED,
            heartbeat_at=timezone.now(),
            **budgets,
        )
        Message.objects.create(
            session=session, run=run, role=Message.Role.USER, content=message.strip()
        )
        session.mode = mode
        session.title = session.title or message.strip()[:200]
        session.save(update_fields=["mode", "title", "updated_at"])
        emit_many(
            run.pk,
            [
                status_event(RunStatus.IDLE, QUEUED),
                (StreamEvent.Type.BUDGET, BudgetTracker(run).meters()),
                (StreamEvent.Type.GUARDRAILS, Guardrails(run).counters()),
            ],
        )
        announce_run(run.pk, session.pk, run.status, "", created=True)
    return run


def _checked_limits(limits: dict[str, Any]) -> dict[str, Any]:
    unknown = set(limits) - set(LIMIT_FIELDS)
    if unknown:
        raise ValueError(f"Unknown run limits: {', '.join(sorted(unknown))}.")
    checked: dict[str, Any] = {}
    for name, value in limits.items():
        problem = budget_bounds.problem(name, value)
        if problem:
            raise ValueError(f"{problem[0].upper()}{problem[1:]}.")
        number = Decimal(str(value))
        checked[name] = number if name == "max_cost" else int(number)
    return checked


def start_run(
    session: ChatSession,
    *,
    user: StaffUser,
    message: str,
    mode: str,
    limits: dict[str, Any] | None = None,
) -> Run:
    """Open a run and hand it to a worker (once the transaction commits). Raises
    `RunNotQueued` when the queue cannot take it: the run is then deleted again."""
    with transaction.atomic():
        run = open_run(session, user=user, message=message, mode=mode, limits=limits)
        run_id = run.pk
        transaction.on_commit(lambda: _hand_to_worker(run_id, resumed=False))
    return run


def queue_run(run_id: int) -> None:
    """Hand a run opened with `open_run` to a worker, now (call it once the run is
    committed). Raises `RunNotQueued` when the queue cannot take it: the run is then
    deleted again."""
    _hand_to_worker(run_id, resumed=False)


def _hand_to_worker(run_id: int, *, resumed: bool) -> None:
    """Enqueue the run's task, now that its rows are committed. If the broker cannot be
    reached, a new run is deleted (nothing was done yet, and the person is told to try
    again) and a resumed one is stopped saying so: neither waits for a sweep."""
    from chat.tasks import run_agent as run_agent_task

    try:
        # Called on commit, outside any transaction: the broker is reached right here.
        enqueue(run_agent_task, run_id)
    except QUEUE_ERRORS as exc:
        log.warning("could not queue run %s: %s", run_id, exc)
        why = f"The work queue could not be reached ({type(exc).__name__}: {exc})"
        if resumed:
            detail = f"{why}; the run could not be handed back to a worker."
            end_run(
                run_id, StopReason.WORKER_LOST, detail, statuses=(RunStatus.IDLE,), error=detail
            )
        else:
            Run.objects.filter(pk=run_id, status=RunStatus.IDLE).delete()
        raise RunNotQueued(
            f"{why}, so the run was not started. Nothing was kept; try again in a moment, "
            "and if it persists ask an administrator to check the broker (REDIS_URL)."
        ) from exc


def retry_run(
    run: Run,
    *,
    user: StaffUser,
    mode: str | None = None,
    limits: dict[str, Any] | None = None,
) -> Run:
    """The one-click next actions: the run's message again, maybe in another mode or
    with a limit raised (`{"max_steps": 20}`)."""
    first = run.messages.filter(role=Message.Role.USER).order_by("id").first()
    message = first.content if first else ""
    return start_run(run.session, user=user, message=message, mode=mode or run.mode, limits=limits)


# -- working a run: the task claims it, the loop drives it ------------------------------


def run_agent(run_id: int) -> str:
    """Claim a queued run and drive it until it stops or pauses. Idempotent: a run
    that is not queued any more is left alone. Returns the run's status."""
    if _stopped_for_unusable_budgets(run_id, statuses=(RunStatus.IDLE,)):
        return RunStatus.STOPPED
    run = _claim(run_id)
    if run is None:
        return ""
    try:
        AgentLoop(run).run_to_end()
    except Exception as exc:
        log.exception("agent run %s failed", run_id)
        message = f"The worker failed: {type(exc).__name__}: {exc}"
        end_run(run_id, StopReason.WORKER_LOST, message, statuses=ACTIVE_STATUSES, error=message)
    return Run.objects.filter(pk=run_id).values_list("status", flat=True).first() or ""


def _claim(run_id: int) -> Run | None:
    now = timezone.now()
    claimed = move_run(
        run_id,
        RunStatus.THINKING,
        "Picked up by a worker.",
        sources=(RunStatus.IDLE,),
        where=Q(stop_requested=False),
        fields={
            "heartbeat_at": now,
            "started_at": Coalesce(F("started_at"), Value(now, output_field=DateTimeField())),
        },
        announce=False,  # the first step says "thinking" with what it asks
    )
    if not claimed:
        return None
    return Run.objects.select_related("started_by", "pending_approval").get(pk=run_id)


# -- stopping and resuming --------------------------------------------------------------------


def request_stop(run: Run, *, user: StaffUser) -> bool:
    """Stop a run: at once when nothing is running it (queued, or paused for an
    approval), else at the loop's next poll (within 2 s). Whether anything changed."""
    name = user.get_username()
    if end_run(
        run.pk,
        StopReason.STOPPED_BY_USER,
        f"Stopped by {name}.",
        statuses=(RunStatus.IDLE, RunStatus.WAITING_APPROVAL),
        context={"by": name},
        usage={"stop_requested_by": user},
        actor=user,
        audit_as="stopped",
    ):
        return True
    return move_run(
        run.pk,
        RunStatus.STOPPING,
        f"Stop requested by {name}.",
        sources=WORKING_STATUSES,
        where=Q(stop_requested=False),
        fields={"stop_requested": True, "stop_requested_by": user},
        actor=user,
        audit_as="stop_requested",
    )


def resume_run(run: Run) -> bool:
    """Hand a run paused for an approval back to a worker; it carries on where it paused."""
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run.pk)
        if run.status != RunStatus.WAITING_APPROVAL:
            return False
        now = timezone.now()
        approval = run.pending_approval
        decider = approval.decided_by if approval else None
        who = decider.get_username() if decider else "someone"
        resumed = move_run(
            run.pk,
            RunStatus.IDLE,
            f"Approval #{run.pending_approval_id} granted by {who}; resuming.",
            sources=(RunStatus.WAITING_APPROVAL,),
            fields={
                "stop_reason": "",
                "paused_at": None,
                "paused_seconds": round(run.paused_seconds + _paused_for(run.paused_at, now), 1),
                "heartbeat_at": now,
            },
            actor=decider,
            audit_as="resumed",
        )
        if resumed:
            run_id = run.pk
            transaction.on_commit(lambda: _hand_to_worker(run_id, resumed=True))
    return resumed


def _paused_for(paused_at: datetime | None, now: datetime) -> float:
    return max((now - paused_at).total_seconds(), 0.0) if paused_at is not None else 0.0


def approval_decided(approval: Approval) -> None:
    """The approval waiter: an approval resumes its paused run; a rejection or an
    expiry stops it, saying so."""
    run = Run.objects.filter(pending_approval=approval, status=RunStatus.WAITING_APPROVAL).first()
    if run is None:
        return
    if approval.status == Approval.Status.APPROVED:
        resume_run(run)
        return
    tool = str((approval.proposal or {}).get("tool") or "")
    context: dict[str, Any] = {"approval_id": approval.pk, "tool": tool}
    rejector = None
    if approval.status == Approval.Status.REJECTED:
        rejector = approval.decided_by
        who = rejector.get_username() if rejector else "someone"
        note = approval.decision_note
        detail = f"Approval #{approval.pk} was rejected by {who}" + (f": {note}" if note else ".")
        reason = StopReason.STOPPED_BY_USER
        context.update(rejected_by=who, note=note)
    else:
        detail = f"Approval #{approval.pk} expired before anyone decided it."
        reason = StopReason.AWAITING_APPROVAL
        context.update(expired=True)
    end_run(
        run.pk,
        reason,
        detail,
        statuses=(RunStatus.WAITING_APPROVAL,),
        context=context,
        actor=rejector,
        audit_as="stopped" if rejector else "",
    )


def register_approval_waiters() -> None:
    """From `ChatConfig.ready()`: decisions on a risky tool or on a model call a run
    waits for come back here."""
    register_waiter(RISKY_TOOL_ACTION, approval_decided)
    register_waiter(call_approvals.APPROVAL_ACTION, approval_decided)


# -- the lost-run sweep -------------------------------------------------------------------------


def detect_lost_runs(now: datetime | None = None) -> list[int]:
    """Stop runs whose worker went silent (no heartbeat for CHAT_HEARTBEAT_TIMEOUT_SECONDS,
    or queued and never picked up for 60 times that): stop reason worker_lost."""
    now = now or timezone.now()
    timeout = settings.CHAT_HEARTBEAT_TIMEOUT_SECONDS
    cutoff = now - timedelta(seconds=timeout)
    silent = Q(status__in=ACTIVE_STATUSES) & (
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, created_at__lt=cutoff)
    )
    never_picked_up = Q(
        status=RunStatus.IDLE, heartbeat_at__lt=now - timedelta(seconds=timeout * QUEUED_GRACE)
    )
    lost = []
    for run_id, status in Run.objects.filter(silent | never_picked_up).values_list("pk", "status"):
        detail = (
            f"No worker picked the run up in {timeout * QUEUED_GRACE} s."
            if status == RunStatus.IDLE
            else f"No heartbeat from its worker for {timeout} s: the worker died or restarted."
        )
        try:
            if _stopped_for_unusable_budgets(run_id, statuses=(status,)) or end_run(
                run_id,
                StopReason.WORKER_LOST,
                detail,
                statuses=(status,),
                where=silent | never_picked_up,
                error=detail,
            ):
                lost.append(run_id)
        except Exception:
            # One run that cannot be stopped must not keep the sweep from the others.
            log.exception("could not stop lost run %s", run_id)
    return lost


# -- budgets the loop cannot use -------------------------------------------------------------


def unusable_budgets(run_id: int) -> tuple[dict[str, Any], list[str]]:
    """The run's budgets that are out of bounds, each brought within them, and what was
    wrong with each. Read as text, so that a value no column reader can convert (a
    cost past money's digits on SQLite) is reported rather than raised."""
    as_text = {f"{name}_text": Cast(name, TextField()) for name in LIMIT_FIELDS}
    row = Run.objects.filter(pk=run_id).annotate(**as_text).values_list(*as_text).first()
    fixed: dict[str, Any] = {}
    problems: list[str] = []
    for name, text in zip(LIMIT_FIELDS, row or (), strict=False):
        problem = budget_bounds.problem(name, text)
        if problem:
            fixed[name] = budget_bounds.clamped(name, text)
            problems.append(problem)
    return fixed, problems


def _stopped_for_unusable_budgets(run_id: int, *, statuses: tuple[str, ...]) -> bool:
    """Stop the run with stop reason invalid_budget if a budget is out of bounds; its
    budgets are brought within them on the way, so its pages render again."""
    fixed, problems = unusable_budgets(run_id)
    if not problems:
        return False
    detail = "Its budgets cannot be used: " + "; ".join(problems) + "."
    return end_run(
        run_id,
        StopReason.INVALID_BUDGET,
        detail,
        statuses=statuses,
        usage=fixed,
        error=detail,
        context={"problems": problems},
    )
