"""The agent loop: a run goes from a person's message to a stop reason, under control.

`start_run()` opens a run (its budgets copied from the mode's `RunBudget`), stores the
person's message and enqueues `run_agent`, which a worker claims atomically
(`idle` -> `thinking`, so a task delivered twice runs once). Each step asks the model
through `routing.calls.stream` (kill switches, route, approvals, budget reservation
and exact cost all apply), streams its tokens through a `TokenCoalescer`, runs the
tool calls it made and feeds their results back, until the model answers without a
tool call (`completed`) or something stops it: a budget (`max_steps`, `wall_clock`,
`cost_budget`), a guardrail (`loop_detected`, `no_progress`, `repeated_failure`), a
person (`stopped_by_user`), a kill switch (`toggle_off`), the provider
(`provider_error`), or a risky tool, which pauses the run (`waiting_approval`, stop
reason `awaiting_approval`) until an approval resumes it where it paused.

Every write to the run from the loop is a conditional UPDATE on the run still being
active (and not asked to stop): a run that was stopped, or declared lost, elsewhere
is never written back to life by a worker that was slow to notice.

Stopping within 2 seconds, even mid-stream: the loop reads the run's stop flag every
`STOP_POLL_SECONDS` between chunks, and reads the model's stream in a thread of its
own, so a provider that is silent (or still thinking before its first byte) does
not hold the loop. A call given up that way is closed by that thread when the
provider returns, and settled for what it streamed. The exception is a loop whose
caller holds a database transaction (tests that wrap each test in one): another
thread could not see its rows, so it reads the stream inline and checks between
chunks.

Heartbeats: every status change writes `heartbeat_at`, and a streaming run writes
it every `HEARTBEAT_SECONDS`. `detect_lost_runs()` (every 15 s) stops runs silent for
`CHAT_HEARTBEAT_TIMEOUT_SECONDS` with stop reason `worker_lost`, keeping their events.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any, NoReturn

from django.conf import settings
from django.db import connection, connections, transaction
from django.db.models import DateTimeField, F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from chat import stop_reasons, tools
from chat.budget_tracker import PAUSED_SECONDS, BudgetTracker
from chat.events import EventSpec, TokenCoalescer, emit, emit_many
from chat.guardrails import Guardrails, fingerprint
from chat.models import (
    ACTIVE_STATUSES,
    ChatSession,
    Message,
    Run,
    RunBudget,
    RunStatus,
    StopReason,
    StreamEvent,
    ToolExecution,
)
from controlplane.approvals import register_waiter, request_approval
from controlplane.background import enqueue
from controlplane.models import Approval, toggle_enabled
from controlplane.tiers import Tier
from routing import call_approvals, calls
from routing.calls import (
    ApprovalRequired,
    CallContext,
    CallFailed,
    CallRefused,
    CallResult,
    FeatureOff,
    OverBudget,
)
from routing.models import Mode
from routing.providers import StreamChunk

log = logging.getLogger(__name__)

OPERATION = "agent"  # the routing operation every model call of a run goes through
RUNS_TOGGLE = "chat.runs.enabled"
RISKY_TOOL_ACTION = "chat.risky_tool"
STOP_POLL_SECONDS = 0.25  # a stop request is seen this soon, mid-stream included
HEARTBEAT_SECONDS = 5.0
QUEUED_GRACE = 60  # queued and not picked up in 60 heartbeat timeouts (30 min): lost too
QUEUED = "Queued: waiting for a worker to pick it up."
LIMIT_FIELDS = ("max_steps", "max_wall_clock_seconds", "max_cost", "max_retries_per_fingerprint")
SYSTEM_PROMPT = (
    "You are the operations agent of a control plane for AI operations, working in "
    "{mode} mode. Do what the person asks. Call a tool when it helps; when you have "
    "the answer, reply without calling a tool. Say plainly when you cannot do something."
)


# -- opening, stopping and resuming runs ------------------------------------------------------


def emit_status(run_id: int, status: str, detail: str) -> None:
    emit(run_id, *status_event(status, detail))


def status_event(status: str, detail: str) -> EventSpec:
    return StreamEvent.Type.STATUS, {"status": str(status), "detail": detail}


def open_run(
    session: ChatSession,
    *,
    user: Any,
    message: str,
    mode: str,
    limits: dict[str, Any] | None = None,
) -> Run:
    """A queued run with its budgets and the person's message; nothing runs it yet."""
    if mode not in Mode.values:
        raise ValueError(f"Unknown mode {mode!r}; one of {', '.join(Mode.values)}.")
    if not message.strip():
        raise ValueError("A run needs a message.")
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
    return run


def _checked_limits(limits: dict[str, Any]) -> dict[str, Any]:
    unknown = set(limits) - set(LIMIT_FIELDS)
    if unknown:
        raise ValueError(f"Unknown run limits: {', '.join(sorted(unknown))}.")
    checked: dict[str, Any] = {}
    for name, value in limits.items():
        number = Decimal(str(value)) if name == "max_cost" else int(value)
        if number <= 0:
            raise ValueError(f"{name} must be positive.")
        checked[name] = number
    return checked


def start_run(
    session: ChatSession,
    *,
    user: Any,
    message: str,
    mode: str,
    limits: dict[str, Any] | None = None,
) -> Run:
    """Open a run and hand it to a worker (once the transaction commits)."""
    from chat.tasks import run_agent as run_agent_task

    with transaction.atomic():
        run = open_run(session, user=user, message=message, mode=mode, limits=limits)
        enqueue(run_agent_task, run.pk)
    return run


def retry_run(
    run: Run, *, user: Any, mode: str | None = None, limits: dict[str, Any] | None = None
) -> Run:
    """The one-click next actions: the run's message again, maybe in another mode or
    with a limit raised (`{"max_steps": 20}`)."""
    first = run.messages.filter(role=Message.Role.USER).order_by("id").first()
    message = first.content if first else ""
    return start_run(run.session, user=user, message=message, mode=mode or run.mode, limits=limits)


def request_stop(run: Run, *, user: Any) -> bool:
    """Stop a run: at once when nothing is running it (queued, or paused for an
    approval), else at the loop's next poll (within 2 s). Whether anything changed."""
    name = user.get_username() if user is not None else "someone"
    if end_run(
        run.pk,
        StopReason.STOPPED_BY_USER,
        f"Stopped by {name}.",
        statuses=(RunStatus.IDLE, RunStatus.WAITING_APPROVAL),
        context={"by": name},
    ):
        return True
    detail = f"Stop requested by {name}."
    with transaction.atomic():
        asked = Run.objects.filter(pk=run.pk, status__in=ACTIVE_STATUSES, stop_requested=False)
        if not asked.update(stop_requested=True, status=RunStatus.STOPPING, status_detail=detail):
            return False
        emit_status(run.pk, RunStatus.STOPPING, detail)
    return True


def _stopper(detail: str) -> str:
    match = re.match(r"Stop requested by (.+)\.$", detail or "")
    return match.group(1) if match else ""


def resume_run(run: Run) -> bool:
    """Hand a run paused for an approval back to a worker; it carries on where it paused."""
    from chat.tasks import run_agent as run_agent_task

    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run.pk)
        if run.status != RunStatus.WAITING_APPROVAL:
            return False
        state = dict(run.guardrails or {})
        paused_at = state.pop("paused_at", None)
        if paused_at is not None:
            paused = max(time.time() - float(paused_at), 0.0)
            state[PAUSED_SECONDS] = round(float(state.get(PAUSED_SECONDS, 0)) + paused, 1)
        approval = run.pending_approval
        who = approval.decided_by.get_username() if approval and approval.decided_by else "someone"
        detail = f"Approval #{run.pending_approval_id} granted by {who}; resuming."
        Run.objects.filter(pk=run.pk).update(
            status=RunStatus.IDLE,
            stop_reason="",
            status_detail=detail,
            guardrails=state,
            heartbeat_at=timezone.now(),
        )
        emit_status(run.pk, RunStatus.IDLE, detail)
        enqueue(run_agent_task, run.pk)
    return True


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
    if approval.status == Approval.Status.REJECTED:
        who = approval.decided_by.get_username() if approval.decided_by else "someone"
        note = approval.decision_note
        detail = f"Approval #{approval.pk} was rejected by {who}" + (f": {note}" if note else ".")
        reason = StopReason.STOPPED_BY_USER
        context.update(rejected_by=who, note=note)
    else:
        detail = f"Approval #{approval.pk} expired before anyone decided it."
        reason = StopReason.AWAITING_APPROVAL
        context.update(expired=True)
    end_run(run.pk, reason, detail, statuses=(RunStatus.WAITING_APPROVAL,), context=context)


def register_approval_waiters() -> None:
    """From `ChatConfig.ready()`: decisions on a risky tool or on a model call a run
    waits for come back here."""
    register_waiter(RISKY_TOOL_ACTION, approval_decided)
    register_waiter(call_approvals.APPROVAL_ACTION, approval_decided)


# -- ending a run -------------------------------------------------------------------------------


def end_run(
    run_id: int,
    reason: str,
    detail: str,
    *,
    statuses: tuple[str, ...] | list[str],
    error: str = "",
    context: dict[str, Any] | None = None,
    usage: dict[str, Any] | None = None,
    where: Q | None = None,
) -> bool:
    """Stop the run if it is in one of `statuses` (and matches `where`), then emit
    `status`, the final `budget` and `guardrails`, `stop_reason` and any `error`.
    Whether this call stopped it (only one caller ever does)."""
    fields: dict[str, Any] = {
        "status": RunStatus.STOPPED,
        "stop_reason": reason,
        "status_detail": detail[:300],
        "finished_at": timezone.now(),
        **(usage or {}),
    }
    if error:
        fields["last_error"] = error
    with transaction.atomic():
        mine = Run.objects.filter(where or Q(), pk=run_id, status__in=statuses)
        if not mine.update(**fields):
            return False
        run = Run.objects.select_related("pending_approval").get(pk=run_id)
        events = [status_event(RunStatus.STOPPED, run.status_detail)]
        events += _refuse_awaiting_calls(run, detail)
        events.append((StreamEvent.Type.BUDGET, BudgetTracker(run).meters()))
        events.append((StreamEvent.Type.GUARDRAILS, Guardrails(run).counters()))
        explained = stop_reasons.explain(reason, run=run, **(context or {}))
        events.append((StreamEvent.Type.STOP_REASON, explained))
        if error:
            events.append((StreamEvent.Type.ERROR, {"message": error}))
        emit_many(run_id, events)
    return True


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
        events.append(_tool_result_event(execution))
    return events


def detect_lost_runs(now: Any = None) -> list[int]:
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
        if end_run(
            run_id,
            StopReason.WORKER_LOST,
            detail,
            statuses=(status,),
            where=silent | never_picked_up,
            error=detail,
        ):
            lost.append(run_id)
    return lost


# -- the loop ---------------------------------------------------------------------------------


def run_agent(run_id: int) -> str:
    """Claim a queued run and drive it until it stops or pauses. Idempotent: a run
    that is not queued any more is left alone. Returns the run's status."""
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
    claimed = Run.objects.filter(pk=run_id, status=RunStatus.IDLE, stop_requested=False).update(
        status=RunStatus.THINKING,
        status_detail="Picked up by a worker.",
        heartbeat_at=now,
        started_at=Coalesce(F("started_at"), Value(now, output_field=DateTimeField())),
    )
    if not claimed:
        return None
    return Run.objects.select_related("started_by", "pending_approval").get(pk=run_id)


class RunEnded(Exception):
    """Unwinds the loop: the run stopped or paused, or is no longer this worker's."""


class _LostControl(Exception):
    """Raised inside a transaction to roll it back: the run is no longer ours to change."""


@dataclass(frozen=True)
class Stop:
    reason: StopReason
    detail: str
    context: dict[str, Any] = field(default_factory=dict)


class AgentLoop:
    def __init__(self, run: Run) -> None:
        self.run = run
        self.budget = BudgetTracker(run)
        self.guards = Guardrails(run)
        self.messages = conversation(run)
        self.tool_specs = tools.tool_specs()
        self.model_approval_id: int | None = None
        self.last_poll = self.last_beat = time.monotonic()

    def run_to_end(self) -> None:
        try:
            self._carry_on_after_approval()
            while True:
                self._step()
        except RunEnded:
            pass

    # -- one step: ask the model, run its tool calls ------------------------------------------

    def _step(self) -> None:
        self._before_step()
        step = self.budget.add_step()
        self._set_status(
            RunStatus.THINKING, f"Step {step} of {self.run.max_steps}: asking the model."
        )
        result = self._ask_model(step)
        self.budget.add_cost(result.cost)
        completion = result.completion
        tool_calls = self._remember_answer(completion.content, completion.tool_calls)
        if not tool_calls:
            self._stop(StopReason.COMPLETED, "The agent finished its answer.")
        self._run_tool_calls(step, tool_calls)
        self._after_step(step, completion.content)

    def _before_step(self) -> None:
        stop = self._stop_due(force=True)
        if stop is None:
            exhausted = self.budget.exhausted()
            stop = Stop(exhausted.reason, exhausted.detail) if exhausted else None
        if stop is not None:
            self._stop(stop.reason, stop.detail, context=stop.context)

    def _after_step(self, step: int, content: str) -> None:
        self.guards.step_observed(self._observation(step, content))
        trip = self.guards.tripped()
        if trip is not None:
            self._stop(
                trip.reason, trip.detail, error=trip.context.get("error", ""), context=trip.context
            )
        exhausted = self.budget.exhausted()
        if exhausted is not None:
            self._stop(exhausted.reason, exhausted.detail)
        self._save(heartbeat_at=timezone.now())
        emit_many(
            self.run.pk,
            [
                (StreamEvent.Type.BUDGET, self.budget.meters()),
                (StreamEvent.Type.GUARDRAILS, self.guards.counters()),
            ],
        )

    def _observation(self, step: int, content: str) -> dict[str, Any]:
        """What a person could see of the step: its text and its tools' results."""
        executions = self.run.tool_executions.filter(step=step).order_by("id")
        return {
            "text": content,
            "tools": [
                [row.tool, row.outcome, row.result, row.error]
                for row in executions.only("tool", "outcome", "result", "error")
            ],
        }

    # -- the model call ------------------------------------------------------------------------

    def _ask_model(self, step: int) -> CallResult:
        context = CallContext(
            OPERATION,
            mode=self.run.mode,
            user=self.run.started_by,
            approval_id=self.model_approval_id,
        )
        try:
            call = calls.stream(context, list(self.messages), tools=self.tool_specs or None)
        except FeatureOff as exc:
            self._stop(
                StopReason.TOGGLE_OFF,
                str(exc),
                context={"toggle": f"operation.{OPERATION}.enabled"},
            )
        except ApprovalRequired as exc:
            self._pause_for_model_call(exc)
        except OverBudget as exc:
            self._stop(
                StopReason.COST_BUDGET, str(exc), error=str(exc), context={"daily_budget": str(exc)}
            )
        except CallRefused as exc:
            self._stop(StopReason.PROVIDER_ERROR, str(exc), error=str(exc))
        except CallFailed as exc:
            self._call_failed(exc)
        self.model_approval_id = None
        return self._read_stream(call, step)

    def _read_stream(self, call: calls.StreamingCall, step: int) -> CallResult:
        coalescer = TokenCoalescer(self.run.pk)
        source = _open_stream(call)
        try:
            self._set_status(
                RunStatus.STREAMING,
                f"Step {step}: {call.decision.model.label} is answering.",
                pending_approval=None,
            )
            while True:
                item = source.next(STOP_POLL_SECONDS)
                if isinstance(item, CallResult):
                    coalescer.flush()
                    return item
                if isinstance(item, StreamChunk):
                    coalescer.add(item.content)
                if (
                    coalescer.buffer
                    and time.monotonic() - coalescer.last_flush >= coalescer.seconds
                ):
                    coalescer.flush()  # a slow model's words still show every fraction of a second
                stop = self._stop_due()
                if stop is not None:
                    coalescer.flush()
                    source.close()
                    self._remember_answer(coalescer.text, [])
                    self._stop(stop.reason, stop.detail, context=stop.context)
        except CallFailed as exc:
            coalescer.flush()
            self._remember_answer(coalescer.text, [])
            self._call_failed(exc)
        finally:
            source.close()

    def _call_failed(self, exc: CallFailed) -> NoReturn:
        message = str(exc)
        failure = fingerprint(f"model call: {message}")
        self.budget.record_failure(failure)
        self.guards.failure_recorded(failure, message)
        self._stop(StopReason.PROVIDER_ERROR, f"The model call failed: {message}", error=message)

    def _remember_answer(self, content: str, calls_made: list[Any]) -> list[dict[str, Any]]:
        """Store the model's answer (and the tool calls in it) in the conversation."""
        tool_calls = [
            {
                "id": call.id or f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in calls_made
        ]
        if not content.strip() and not tool_calls:
            return []
        Message.objects.create(
            session_id=self.run.session_id,
            run=self.run,
            role=Message.Role.ASSISTANT,
            content=content,
            tool_calls=tool_calls,
        )
        self.messages.append(_assistant_message(content, tool_calls))
        return tool_calls

    # -- tool calls ---------------------------------------------------------------------------

    def _run_tool_calls(self, step: int, tool_calls: list[dict[str, Any]]) -> None:
        for call in tool_calls:
            self._run_tool_call(step, call)
            trip = self.guards.tripped()  # five identical calls in one answer are a loop too
            stop = self._stop_due()
            if trip is not None:
                stop = Stop(trip.reason, trip.detail, trip.context)
            if stop is not None:
                error = stop.context.get("error", "")
                self._stop(stop.reason, stop.detail, error=error, context=stop.context)

    def _run_tool_call(self, step: int, call: dict[str, Any]) -> None:
        name = str(call["function"]["name"])
        arguments: dict[str, Any] = {}
        refusal: tools.ToolRefused | None = None
        tool: tools.Tool | None = None
        try:
            arguments = tools.parse_arguments(call["function"].get("arguments"))
            tool = tools.checked_tool(name, arguments)
        except tools.ToolRefused as exc:
            refusal = exc
        self.guards.tool_called(name, arguments)
        if tool is not None and tool.risky:
            self._pause_for_tool(step, call, tool, arguments)
        self._set_status(RunStatus.TOOL_RUNNING, f"Step {step}: running {name}.")
        execution = ToolExecution.objects.create(
            run=self.run, step=step, call_id=call["id"], tool=name, arguments=arguments
        )
        _emit_tool_start(execution)
        self._execute(execution, tool, refusal)

    def _execute(
        self, execution: ToolExecution, tool: tools.Tool | None, refusal: Exception | None
    ) -> None:
        began = time.perf_counter()
        result: Any = None
        outcome, error = ToolExecution.Outcome.OK, ""
        if refusal is not None or tool is None:
            outcome, error = ToolExecution.Outcome.REFUSED, str(refusal or "No such tool.")
        else:
            try:
                context = tools.ToolContext(run_id=self.run.pk, user=self.run.started_by)
                result = tools.run_tool(tool, execution.arguments, context)
            except tools.ToolRefused as exc:
                outcome, error = ToolExecution.Outcome.REFUSED, str(exc)
            except Exception as exc:
                outcome, error = ToolExecution.Outcome.ERROR, f"{type(exc).__name__}: {exc}"
        execution.outcome, execution.result, execution.error = outcome, result, error
        execution.duration_ms = int((time.perf_counter() - began) * 1000)
        execution.finished_at = timezone.now()
        if error:
            execution.fingerprint = fingerprint(f"{execution.tool}: {error}")
            self.budget.record_failure(execution.fingerprint)
            self.guards.failure_recorded(execution.fingerprint, error)
            self.run.last_error = error
        execution.save()
        _emit_tool_result(execution)
        self._remember_tool_result(execution)

    def _remember_tool_result(self, execution: ToolExecution) -> None:
        body = execution.result if not execution.error else {"error": execution.error}
        content = json.dumps(body, ensure_ascii=False)
        Message.objects.create(
            session_id=self.run.session_id,
            run=self.run,
            role=Message.Role.TOOL,
            content=content,
            tool_call_id=execution.call_id,
        )
        self.messages.append(
            {"role": "tool", "tool_call_id": execution.call_id, "content": content}
        )

    # -- pausing for an approval, and carrying on after it ---------------------------------------

    def _pause_for_tool(
        self, step: int, call: dict[str, Any], tool: tools.Tool, arguments: dict[str, Any]
    ) -> NoReturn:
        try:
            with transaction.atomic():
                execution = ToolExecution.objects.create(
                    run=self.run,
                    step=step,
                    call_id=call["id"],
                    tool=tool.name,
                    arguments=arguments,
                    outcome=ToolExecution.Outcome.AWAITING_APPROVAL,
                )
                approval = request_approval(
                    action=RISKY_TOOL_ACTION,
                    requested_by=self.run.started_by,
                    reason=f"Chat run #{self.run.pk} wants to run the risky tool {tool.name} "
                    f"with {json.dumps(arguments, sort_keys=True)}.",
                    subject=self.run,
                    required_tier=Tier.OPERATOR,
                    proposal={
                        "run_id": self.run.pk,
                        "execution_id": execution.pk,
                        "tool": tool.name,
                        "arguments": arguments,
                    },
                )
                self._pause(
                    approval,
                    f"Step {step}: waiting for approval #{approval.pk} to run {tool.name}.",
                    execution=execution,
                )
        except _LostControl:
            self._lost_control()
        raise RunEnded

    def _pause_for_model_call(self, exc: ApprovalRequired) -> NoReturn:
        approval = Approval.objects.get(pk=exc.details["approval_id"])
        self.run.steps -= 1  # the step did not happen; it runs once approved
        try:
            with transaction.atomic():
                self._pause(approval, f"Waiting for approval #{approval.pk}: {exc}")
        except _LostControl:
            self._lost_control()
        raise RunEnded

    def _pause(
        self, approval: Approval, detail: str, *, execution: ToolExecution | None = None
    ) -> None:
        """Status waiting_approval, stop reason awaiting_approval; the waiter resumes it."""
        usage = {**self._usage()}
        usage["guardrails"] = {**usage["guardrails"], "paused_at": time.time()}
        paused = Run.objects.filter(
            pk=self.run.pk, status__in=ACTIVE_STATUSES, stop_requested=False
        ).update(
            **usage,
            status=RunStatus.WAITING_APPROVAL,
            stop_reason=StopReason.AWAITING_APPROVAL,
            status_detail=detail[:300],
            pending_approval=approval,
            heartbeat_at=timezone.now(),
        )
        if not paused:
            raise _LostControl
        events = [status_event(RunStatus.WAITING_APPROVAL, detail)]
        if execution is not None:
            events.append(_tool_start_event(execution))
        events.append((StreamEvent.Type.BUDGET, self.budget.meters()))
        events.append((StreamEvent.Type.GUARDRAILS, self.guards.counters()))
        tool = execution.tool if execution else ""
        approval_data = {
            "approval_id": approval.pk,
            "tool": tool,
            "arguments": execution.arguments if execution else approval.proposal,
            "reason": approval.reason,
        }
        events.append((StreamEvent.Type.APPROVAL, approval_data))
        explained = stop_reasons.explain(
            StopReason.AWAITING_APPROVAL, run=self.run, approval_id=approval.pk, tool=tool
        )
        events.append((StreamEvent.Type.STOP_REASON, explained))
        emit_many(self.run.pk, events)

    def _carry_on_after_approval(self) -> None:
        """A resumed run: run the approved tool call and the rest of its answer's calls
        (or let the approved model call through), then go on with the next step."""
        approval = self.run.pending_approval
        if approval is None:
            return
        if approval.action == call_approvals.APPROVAL_ACTION:
            self.model_approval_id = approval.pk  # the next model call uses it
            return
        awaiting = self.run.tool_executions.filter(outcome=ToolExecution.Outcome.AWAITING_APPROVAL)
        execution = awaiting.order_by("id").first()
        if execution is None:
            return
        step = execution.step
        self._set_status(
            RunStatus.TOOL_RUNNING,
            f"Step {step}: approval #{approval.pk} granted; running {execution.tool}.",
            pending_approval=None,
        )
        tool = tools.get_tool(execution.tool)
        refusal = None if tool else tools.ToolRefused(f"The tool {execution.tool} is gone.")
        self._execute(execution, tool, refusal)
        answer = self._answer_with_call(execution.call_id)
        done = set(self.run.tool_executions.values_list("call_id", flat=True))
        self._run_tool_calls(step, [c for c in answer.tool_calls if c["id"] not in done])
        self._after_step(step, answer.content)

    def _answer_with_call(self, call_id: str) -> Message:
        answers = self.run.messages.filter(role=Message.Role.ASSISTANT).order_by("-id")
        for answer in answers:
            if any(call.get("id") == call_id for call in answer.tool_calls or []):
                return answer
        return Message(content="", tool_calls=[])

    # -- run state: status, heartbeat, stop ----------------------------------------------------

    def _usage(self) -> dict[str, Any]:
        run = self.run
        return {
            "steps": run.steps,
            "cost": run.cost,
            "retries_by_fingerprint": run.retries_by_fingerprint,
            "guardrails": self.guards.state(),
            "last_error": run.last_error,
        }

    def _save(self, **fields: Any) -> None:
        mine = Run.objects.filter(pk=self.run.pk, status__in=ACTIVE_STATUSES)
        if not mine.update(**self._usage(), **fields):
            raise RunEnded  # stopped or declared lost elsewhere: not ours any more

    def _set_status(self, status: RunStatus, detail: str, **fields: Any) -> None:
        """Move to `status` unless a stop was asked for (then stop instead)."""
        updated = Run.objects.filter(
            pk=self.run.pk, status__in=ACTIVE_STATUSES, stop_requested=False
        ).update(
            **self._usage(),
            status=status,
            status_detail=detail[:300],
            heartbeat_at=timezone.now(),
            **fields,
        )
        if not updated:
            self._lost_control()
        self.run.status = status
        self.last_beat = time.monotonic()
        emit_status(self.run.pk, status, detail)

    def _lost_control(self) -> NoReturn:
        stop = self._stop_due(force=True)
        if stop is not None:
            self._stop(stop.reason, stop.detail, context=stop.context)
        raise RunEnded

    def _stop_due(self, *, force: bool = False) -> Stop | None:
        """A reason to stop now, if any: a stop request, the kill switch, the clock.
        Reads the database at most every STOP_POLL_SECONDS unless forced."""
        now = time.monotonic()
        if now - self.last_beat >= HEARTBEAT_SECONDS:
            self._save(heartbeat_at=timezone.now())
            self.last_beat = now
        if not force and now - self.last_poll < STOP_POLL_SECONDS:
            return None
        self.last_poll = now
        row = Run.objects.filter(pk=self.run.pk).values_list(
            "status", "stop_requested", "status_detail"
        )
        found = row.first()
        if found is None or found[0] not in ACTIVE_STATUSES:
            raise RunEnded
        if found[1]:
            who = _stopper(found[2])
            detail = f"Stopped by {who}." if who else "Stopped at a person's request."
            return Stop(StopReason.STOPPED_BY_USER, detail, {"by": who})
        if not toggle_enabled(RUNS_TOGGLE, default=True):
            return Stop(
                StopReason.TOGGLE_OFF,
                f"Agent runs were switched off (toggle {RUNS_TOGGLE}).",
                {"toggle": RUNS_TOGGLE},
            )
        late = self.budget.wall_clock_exceeded()
        return Stop(late.reason, late.detail) if late else None

    def _stop(
        self,
        reason: StopReason,
        detail: str,
        *,
        error: str = "",
        context: dict[str, Any] | None = None,
    ) -> NoReturn:
        end_run(
            self.run.pk,
            reason,
            detail,
            statuses=ACTIVE_STATUSES,
            error=error,
            context=context,
            usage=self._usage(),
        )
        raise RunEnded


# -- the conversation the model sees ---------------------------------------------------------


def conversation(run: Run) -> list[dict[str, Any]]:
    """The session's messages up to this run, as OpenAI chat messages. A tool call a
    stopped run never answered gets a stand-in result, so the history stays valid."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM_PROMPT.format(mode=Mode(run.mode).label)}
    ]
    rows = Message.objects.filter(session_id=run.session_id).filter(
        Q(run__isnull=True) | Q(run_id__lte=run.pk)
    )
    unanswered: list[str] = []
    for row in rows.order_by("created_at", "id"):
        if row.role != Message.Role.TOOL:
            messages += [_stand_in_result(call_id) for call_id in unanswered]
            unanswered = []
        if row.role == Message.Role.ASSISTANT:
            messages.append(_assistant_message(row.content, row.tool_calls or []))
            unanswered = [call["id"] for call in row.tool_calls or []]
        elif row.role == Message.Role.TOOL:
            if row.tool_call_id in unanswered:
                unanswered.remove(row.tool_call_id)
                messages.append(
                    {"role": "tool", "tool_call_id": row.tool_call_id, "content": row.content}
                )
        else:
            messages.append({"role": str(row.role), "content": row.content})
    return messages


def _assistant_message(content: str, tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content or None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def _stand_in_result(call_id: str) -> dict[str, Any]:
    content = json.dumps({"error": "Not run: the run stopped before this call."})
    return {"role": "tool", "tool_call_id": call_id, "content": content}


# -- events of the tool timeline -----------------------------------------------------------------


def _emit_tool_start(execution: ToolExecution) -> None:
    emit(execution.run_id, *_tool_start_event(execution))


def _emit_tool_result(execution: ToolExecution) -> None:
    emit(execution.run_id, *_tool_result_event(execution))


def _tool_start_event(execution: ToolExecution) -> EventSpec:
    return StreamEvent.Type.TOOL_START, {
        "execution_id": execution.pk,
        "tool": execution.tool,
        "arguments": execution.arguments,
        "step": execution.step,
    }


def _tool_result_event(execution: ToolExecution) -> EventSpec:
    return StreamEvent.Type.TOOL_RESULT, {
        "execution_id": execution.pk,
        "tool": execution.tool,
        "outcome": execution.outcome,
        "duration_ms": execution.duration_ms,
        "fingerprint": execution.fingerprint,
        "result": execution.result,
        "error": execution.error,
    }


# -- reading a model's stream --------------------------------------------------------------------


class _InlineStream:
    """The stream read in the loop's own thread (the caller holds a transaction)."""

    def __init__(self, call: calls.StreamingCall) -> None:
        self.call = call
        self.items = iter(call)

    def next(self, timeout: float) -> StreamChunk | CallResult | None:
        try:
            return next(self.items)
        except StopIteration:
            raise CallFailed("The model's stream ended without a result.") from None

    def close(self) -> None:
        self.call.events.close()


_END = object()
_abandoned: set[_ThreadedStream] = set()
_abandoned_lock = threading.Lock()


class _ThreadedStream:
    """The stream read by a thread of its own, so that the loop keeps polling for a stop
    while the provider is silent. A stream given up is closed by that thread."""

    def __init__(self, call: calls.StreamingCall) -> None:
        self.call = call
        self.items: queue.Queue[Any] = queue.Queue()
        self.cancelled = threading.Event()
        self.thread = threading.Thread(target=self._read, name="chat-model-stream", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for item in self.call:
                if self.cancelled.is_set():
                    break
                self.items.put(item)
        except Exception as exc:
            self.items.put(exc)
        finally:
            try:
                self.call.events.close()  # settles a call given up mid-stream
            finally:
                self.items.put(_END)
                connections.close_all()  # this thread's connections only

    def next(self, timeout: float) -> StreamChunk | CallResult | None:
        try:
            item = self.items.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _END:
            raise CallFailed("The model's stream ended without a result.")
        if isinstance(item, Exception):
            raise item
        return item

    def close(self) -> None:
        if self.cancelled.is_set():
            return
        self.cancelled.set()
        with _abandoned_lock:
            _abandoned.difference_update([s for s in _abandoned if not s.thread.is_alive()])
            if self.thread.is_alive():
                _abandoned.add(self)


def _open_stream(call: calls.StreamingCall) -> _InlineStream | _ThreadedStream:
    if connection.in_atomic_block:
        return _InlineStream(call)
    return _ThreadedStream(call)


def wait_for_abandoned_calls(timeout: float = 30.0) -> bool:
    """Wait for model calls given up mid-stream to be closed and settled (a command
    about to exit, a test about to clean up). Whether they all were."""
    deadline = time.monotonic() + timeout
    with _abandoned_lock:
        pending = list(_abandoned)
    for stream in pending:
        stream.thread.join(max(deadline - time.monotonic(), 0))
    with _abandoned_lock:
        _abandoned.difference_update([s for s in pending if not s.thread.is_alive()])
        return not _abandoned
