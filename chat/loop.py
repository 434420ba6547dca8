"""The agent loop: a claimed run, step by step, until it stops or pauses.

`chat.runs.run_agent()` claims a queued run and hands it to `AgentLoop`. Each step
asks the model through `routing.calls.stream` (kill switches, route, approvals,
budget reservation and exact cost all apply), streams its tokens through a
`TokenCoalescer`, runs the tool calls it made and feeds their results back, until
the model answers without a tool call (`completed`) or something stops it: a budget
(`max_steps`, `wall_clock`, `cost_budget`), a guardrail (`loop_detected`,
`no_progress`, `repeated_failure`), a person (`stopped_by_user`), a kill switch
(`toggle_off`), the provider (`provider_error`), or a risky tool, which pauses the
run (`waiting_approval`, stop reason `awaiting_approval`) until an approval resumes
it where it paused.

Every write to the run goes through `chat.run_status`, conditional on the run still
being active (and not asked to stop). Stopping within 2 seconds, even mid-stream or
mid-tool: the loop reads the run's stop flag every `STOP_POLL_SECONDS` between
chunks, reads the model's stream without blocking on it (`chat.streams`), and waits
for a tool call the same way, cancelling it on a stop (`chat.tool_calls`). Heartbeats: every status
change writes `heartbeat_at`, and a streaming run writes it every `HEARTBEAT_SECONDS`.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, NoReturn

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from chat import tool_calls, tools
from chat.budget_tracker import BudgetTracker
from chat.conversation import assistant_message, conversation
from chat.events import TokenCoalescer, emit_many
from chat.guardrails import Guardrails, fingerprint
from chat.kill_switches import OPERATION, OPERATION_TOGGLE, RUNS_TOGGLE
from chat.model_calls import ModelCall
from chat.model_calls import Outcome as ModelCallOutcome
from chat.models import (
    ACTIVE_STATUSES,
    WORKING_STATUSES,
    Message,
    Run,
    RunStatus,
    StopReason,
    StreamEvent,
    ToolExecution,
)
from chat.run_calls import request_id_for
from chat.run_status import end_run, move_run, pause_run, record_progress
from chat.streams import open_stream
from chat.tool_calls import emit_tool_start
from controlplane.approvals import request_approval
from controlplane.models import Approval, toggle_enabled
from controlplane.tiers import Tier
from routing import call_approvals, calls
from routing.call_refusals import ApprovalRequired, CallFailed, CallRefused, FeatureOff, OverBudget
from routing.calls import CallContext, CallResult
from routing.providers import StreamChunk

RISKY_TOOL_ACTION = "chat.risky_tool"
STOP_POLL_SECONDS = 0.25  # a stop request is seen this soon, mid-stream included
HEARTBEAT_SECONDS = 5.0


def _username(user_id: int | None) -> str:
    """Who asked for the stop, read once, when the loop acts on it."""
    user = get_user_model().objects.filter(pk=user_id).first() if user_id else None
    return user.get_username() if user is not None else ""


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
        timed = ModelCall(self.run.pk, step)
        context = CallContext(
            OPERATION,
            mode=self.run.mode,
            user=self.run.started_by,
            approval_id=self.model_approval_id,
            request_id=request_id_for(self.run.pk),  # finds the run's calls in the log
        )
        try:
            call = calls.stream(context, list(self.messages), tools=self.tool_specs or None)
        except FeatureOff as exc:
            self._stop(
                StopReason.TOGGLE_OFF,
                str(exc),
                context={"toggle": OPERATION_TOGGLE},
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
        return self._read_stream(call, timed)

    def _read_stream(self, call: calls.StreamingCall, timed: ModelCall) -> CallResult:
        step = timed.step
        coalescer = TokenCoalescer(self.run.pk, step=step)
        source = open_stream(call)
        try:
            self._set_status(
                RunStatus.STREAMING,
                f"Step {step}: {call.decision.model.label} is answering.",
                pending_approval=None,
            )
            timed.started(call.decision.model.label)
            while True:
                item = source.next(STOP_POLL_SECONDS)
                if isinstance(item, CallResult):
                    coalescer.flush()
                    timed.finished(ModelCallOutcome.OK, item)
                    return item
                if isinstance(item, StreamChunk):
                    coalescer.add(item.content)
                coalescer.flush_if_due()
                stop = self._stop_due()
                if stop is not None:
                    coalescer.flush()
                    source.close()
                    timed.finished(ModelCallOutcome.STOPPED, error=stop.detail)
                    self._remember_answer(coalescer.text, [])
                    self._stop(stop.reason, stop.detail, context=stop.context)
        except CallFailed as exc:
            coalescer.flush()
            timed.finished(ModelCallOutcome.FAILED, error=str(exc))
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
        self.messages.append(assistant_message(content, tool_calls))
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
        emit_tool_start(execution)
        self._execute(execution, tool, refusal)

    def _execute(
        self, execution: ToolExecution, tool: tools.Tool | None, refusal: Exception | None
    ) -> None:
        stop = tool_calls.execute(
            execution, tool, refusal, user=self.run.started_by, stop_due=self._stop_due
        )
        if execution.fingerprint:
            self.budget.record_failure(execution.fingerprint)
            self.guards.failure_recorded(execution.fingerprint, execution.error)
            self.run.last_error = execution.error
        self.messages.append(tool_calls.remember_result(self.run, execution))
        if stop is not None:  # stopped while the tool ran: without waiting for it
            self._stop(stop.reason, stop.detail, context=stop.context)

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
        paused = pause_run(
            self.run,
            approval,
            detail,
            usage=self._usage(),
            meters=self.budget.meters,
            counters=self.guards.counters,
            execution=execution,
        )
        if not paused:
            raise _LostControl

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
        tool_calls.approval_granted(execution)
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
        if not record_progress(self.run.pk, {**self._usage(), **fields}):
            raise RunEnded  # stopped or declared lost elsewhere: not ours any more

    def _set_status(self, status: RunStatus, detail: str, **fields: Any) -> None:
        """Move to `status` unless a stop was asked for (then stop instead)."""
        moved = move_run(
            self.run.pk,
            status,
            detail,
            sources=WORKING_STATUSES,  # a run asked to stop is stopping, or stopped
            where=Q(stop_requested=False),
            fields={**self._usage(), "heartbeat_at": timezone.now(), **fields},
            clock_since=self.budget.clock_origin(),
        )
        if not moved:
            self._lost_control()
        self.run.status = status
        self.last_beat = time.monotonic()

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
            "status", "stop_requested", "stop_requested_by_id"
        )
        found = row.first()
        if found is None or found[0] not in ACTIVE_STATUSES:
            raise RunEnded
        if found[1]:
            who = _username(found[2])
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
