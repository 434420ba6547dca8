"""The agent loop: runs opened with their mode's budgets, model calls through routing,
tools fed back, the event stream (order, shapes, gap-free seq, coalesced tokens), the
tool timeline, budget meters, heartbeats, and the task that runs it."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from chat import conversation, loop
from chat.budget_tracker import BudgetTracker, meter, meter_state
from chat.events import COALESCE_CHARACTERS, TokenCoalescer
from chat.models import ChatSession, Message, Run, RunBudget, RunStatus, StopReason, ToolExecution
from chat.runs import open_run, retry_run, run_agent, start_run
from chat.tasks import detect_lost_runs as detect_lost_runs_task
from chat.tasks import run_agent as run_agent_task
from controlplane.money import MoneySum
from routing.models import OperationLog
from routing.providers import CallTool, Reply
from tests.chat.scripted_runs import (
    assert_gap_free,
    events_of,
    last_data,
    run_scripted,
    scripted_tools,  # noqa: F401  (a fixture)
    types_of,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("scripted_tools")]


def test_a_run_copies_its_budgets_from_its_mode_so_later_changes_do_not_move_them(operator):
    RunBudget.objects.filter(mode="code").update(max_steps=7, max_cost=Decimal("1.25"))
    session = ChatSession.objects.create(user=operator)

    run = open_run(session, user=operator, message="Fix the build", mode="code")
    RunBudget.objects.filter(mode="code").update(max_steps=99)

    run.refresh_from_db()
    assert (run.max_steps, run.max_cost, run.max_wall_clock_seconds) == (7, Decimal("1.25"), 900)
    assert run.status == RunStatus.IDLE
    assert run.messages.get().content == "Fix the build"
    session.refresh_from_db()
    assert (session.mode, session.title) == ("code", "Fix the build")
    assert types_of(run) == ["status", "budget", "guardrails"]
    assert last_data(run, "status") == {
        "status": "idle",
        "detail": "Queued: waiting for a worker to pick it up.",
    }


def test_a_run_needs_a_known_mode_a_message_and_sensible_limits(operator):
    session = ChatSession.objects.create(user=operator)
    with pytest.raises(ValueError, match="Unknown mode"):
        open_run(session, user=operator, message="Hi", mode="turbo")
    with pytest.raises(ValueError, match="needs a message"):
        open_run(session, user=operator, message="  ", mode="normal")
    with pytest.raises(ValueError, match="step budget must be between 1 and 1000, not 0"):
        open_run(session, user=operator, message="Hi", mode="normal", limits={"max_steps": 0})
    with pytest.raises(ValueError, match="Unknown run limits"):
        open_run(session, user=operator, message="Hi", mode="normal", limits={"steps": 3})
    assert not Run.objects.exists()


def test_the_offline_model_calls_the_tool_the_message_names_and_answers_with_its_result(
    operator, django_capture_on_commit_callbacks
):
    session = ChatSession.objects.create(user=operator)
    with django_capture_on_commit_callbacks(execute=True):
        run = start_run(session, user=operator, message="Show the queue_summary", mode="normal")

    run.refresh_from_db()
    assert (run.status, run.stop_reason, run.steps) == ("stopped", "completed", 2)
    execution = run.tool_executions.get()
    assert (execution.tool, execution.outcome) == ("queue_summary", "ok")
    assert execution.result["pending"] == 0
    reply = "".join(event.data["text"] for event in events_of(run, "token"))
    assert reply.startswith("The queue_summary tool returned:")
    assert [m.role for m in run.messages.all()] == ["user", "assistant", "tool", "assistant"]
    assert OperationLog.objects.filter(operation="agent", user=operator).count() == 2


def test_a_step_emits_its_events_in_order(operator, django_capture_on_commit_callbacks):
    run, _ = run_scripted(
        [CallTool("next_page"), Reply("Done.")],
        user=operator,
        capture=django_capture_on_commit_callbacks,
    )

    statuses = [e.data["status"] for e in events_of(run, "status")]
    assert statuses == [
        "idle",
        "thinking",
        "streaming",
        "tool_running",
        "thinking",
        "streaming",
        "stopped",
    ]
    assert types_of(run) == [
        "status", "budget", "guardrails",  # queued
        "status", "status", "model_call", "model_call",
        "status", "tool_start", "tool_result", "budget", "guardrails",
        "status", "status", "model_call", "token", "model_call",
        "status", "budget", "guardrails", "stop_reason",
    ]  # fmt: skip
    assert_gap_free(run)


def test_every_event_has_the_documented_data_keys(operator, django_capture_on_commit_callbacks):
    run, _ = run_scripted(
        [CallTool("next_page", {"page": 2}), Reply("Done.")],
        user=operator,
        capture=django_capture_on_commit_callbacks,
    )
    keys = {
        "status": {"status", "detail", "clock_since"},
        "token": {"text", "step"},
        "model_call": {"call_id", "step", "model", "phase", "started_at", "outcome",
                       "duration_ms", "input_tokens", "output_tokens", "cost", "error"},
        "tool_start": {"execution_id", "tool", "arguments", "step", "started_at", "outcome"},
        "tool_result": {
            "execution_id", "tool", "outcome", "duration_ms", "fingerprint", "result", "error",
        },
        "budget": {"steps", "wall_clock", "cost", "retries", "retry_limit"},
        "guardrails": {"loop", "no_progress", "repeated_failure"},
        "stop_reason": {"reason", "label", "suggestion", "next_action"},
    }  # fmt: skip

    # Every key an event has is documented; a few are only on some (clock_since while
    # the loop works the run, step on a step's first text, a model call's phases).
    for event in events_of(run):
        assert set(event.data) <= keys[event.type], event.type
    budget = last_data(run, "budget")
    for meter_name in ("steps", "wall_clock", "cost"):
        assert set(budget[meter_name]) == {"used", "limit", "percent", "state"}
    for counter in last_data(run, "guardrails").values():
        assert set(counter) == {"count", "threshold"}
    assert set(last_data(run, "stop_reason")["next_action"]) >= {"label", "kind"}
    execution = run.tool_executions.get()
    assert last_data(run, "tool_start") == {
        "execution_id": execution.pk,
        "tool": "next_page",
        "arguments": {"page": 2},
        "step": 1,
        "started_at": execution.started_at.isoformat(),
        "outcome": "running",
    }


def test_every_tool_execution_has_one_start_and_one_result_in_the_timeline(
    operator, django_capture_on_commit_callbacks
):
    turns = [CallTool("next_page", {"n": n}) for n in range(4)] + [
        CallTool("no_such_tool"),
        CallTool("next_page", "{not json"),
        Reply("Done."),
    ]
    run, _ = run_scripted(turns, user=operator, capture=django_capture_on_commit_callbacks)

    executions = list(run.tool_executions.order_by("id"))
    assert len(executions) == 6
    starts = [e.data["execution_id"] for e in events_of(run, "tool_start")]
    results = [e.data["execution_id"] for e in events_of(run, "tool_result")]
    assert starts == results == [execution.pk for execution in executions]
    assert [execution.outcome for execution in executions] == ["ok"] * 4 + ["refused"] * 2
    assert "no tool named 'no_such_tool'" in executions[4].error
    assert "not valid JSON" in executions[5].error
    assert all(execution.fingerprint for execution in executions[4:])
    assert all(execution.finished_at for execution in executions)


def test_tool_results_are_fed_back_to_the_model(operator, django_capture_on_commit_callbacks):
    _, scripted = run_scripted(
        [CallTool("next_page", id="call_1"), Reply("Page one.")],
        user=operator,
        capture=django_capture_on_commit_callbacks,
    )

    first, second = scripted.requests
    assert [m["role"] for m in first.messages] == ["system", "user"]
    assert {tool["function"]["name"] for tool in first.tools or []} >= {
        "next_page",
        "queue_summary",
        "http_get",
    }
    assert second.messages[-2]["tool_calls"][0]["id"] == "call_1"
    assert second.messages[-1] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": '{"page": 1}',
    }


def test_a_fast_long_reply_is_coalesced_into_a_few_token_events(
    operator, monkeypatch, django_capture_on_commit_callbacks
):
    # The model streams faster than the coalescer's clock ticks: only size flushes.
    monkeypatch.setattr(TokenCoalescer, "clock", staticmethod(lambda: 0.0))
    reply = " ".join(f"word{n}" for n in range(1000))
    run, _ = run_scripted([Reply(reply)], user=operator, capture=django_capture_on_commit_callbacks)

    tokens = events_of(run, "token")
    assert 1 < len(tokens) <= 25
    assert all(len(event.data["text"]) >= COALESCE_CHARACTERS for event in tokens[:-1])
    assert "".join(event.data["text"] for event in tokens) == reply
    assert run.messages.get(role="assistant").content == reply


def test_the_runs_cost_is_the_sum_of_its_model_calls(operator, django_capture_on_commit_callbacks):
    turns = [CallTool("next_page", cost="0.0001"), Reply("Done.", cost="0.00025")]
    run, _ = run_scripted(turns, user=operator, capture=django_capture_on_commit_callbacks)

    assert run.cost == Decimal("0.00035")
    logged = OperationLog.objects.filter(operation="agent").aggregate(total=MoneySum("cost"))
    assert logged["total"] == run.cost
    assert last_data(run, "budget")["cost"] == {
        "used": "0.00035",
        "limit": "0.5",
        "percent": 0.1,
        "state": "green",
    }


def test_meters_turn_amber_at_sixty_percent_and_red_past_eighty_five():
    assert [meter_state(Decimal(p)) for p in (0, 59.9, 60, 85, 85.1, 120)] == [
        "green",
        "green",
        "amber",
        "amber",
        "red",
        "red",
    ]
    assert meter(Decimal(3), Decimal(10), shown=int) == {
        "used": 3,
        "limit": 10,
        "percent": 30.0,
        "state": "green",
    }


def test_the_wall_clock_leaves_out_the_time_paused_for_an_approval(operator):
    session = ChatSession.objects.create(user=operator)
    run = open_run(session, user=operator, message="Hi", mode="normal")
    now = timezone.now()
    run.started_at = now - timedelta(seconds=100)
    run.paused_seconds = 60

    assert BudgetTracker(run).wall_clock_seconds(now) == 40


def test_a_run_records_a_heartbeat_as_it_goes(operator, django_capture_on_commit_callbacks):
    before = timezone.now()
    run, _ = run_scripted([Reply("Hi.")], user=operator, capture=django_capture_on_commit_callbacks)

    assert run.heartbeat_at >= before
    assert run.started_at >= before


def test_a_run_is_worked_on_once_however_often_its_task_is_delivered(
    operator, django_capture_on_commit_callbacks
):
    run, scripted = run_scripted(
        [Reply("Once.")], user=operator, capture=django_capture_on_commit_callbacks
    )
    events = len(events_of(run))

    assert run_agent(run.pk) == ""
    assert run_agent_task.run(run.pk) == ""
    assert len(events_of(run)) == events
    assert len(scripted.requests) == 1


def test_a_crash_inside_the_loop_stops_the_run_as_worker_lost_with_the_error(
    operator, monkeypatch, django_capture_on_commit_callbacks
):
    def broken(run: Run) -> list[dict[str, str]]:
        raise RuntimeError("the conversation could not be read")

    monkeypatch.setattr(loop, "conversation", broken)
    run, _ = run_scripted([Reply("x")], user=operator, capture=django_capture_on_commit_callbacks)

    assert (run.status, run.stop_reason) == ("stopped", StopReason.WORKER_LOST)
    assert "RuntimeError: the conversation could not be read" in last_data(run, "error")["message"]


def test_retrying_a_run_starts_a_new_one_with_its_message_and_the_raised_limit(
    operator, django_capture_on_commit_callbacks
):
    run, _ = run_scripted(
        [Reply("First.")],
        user=operator,
        capture=django_capture_on_commit_callbacks,
        message="Summarise the incidents",
    )

    again = retry_run(run, user=operator, mode="code", limits={"max_steps": 20})

    assert again.session_id == run.session_id
    assert (again.mode, again.max_steps) == ("code", 20)
    assert again.messages.get().content == "Summarise the incidents"


def test_a_new_run_in_a_session_sees_the_conversation_so_far_with_unanswered_calls_closed(
    operator, django_capture_on_commit_callbacks
):
    run, _ = run_scripted(
        [CallTool("next_page", id="call_a")],
        user=operator,
        capture=django_capture_on_commit_callbacks,
        limits={"max_steps": 1},
    )
    Message.objects.create(
        session=run.session,
        run=run,
        role="assistant",
        tool_calls=[{"id": "call_b", "type": "function", "function": {"name": "x"}}],
    )
    later = open_run(run.session, user=operator, message="And now?", mode="normal")

    messages = conversation.conversation(later)

    assert [m["role"] for m in messages] == [
        "system", "user", "assistant", "tool", "assistant", "tool", "user",
    ]  # fmt: skip
    assert messages[5]["tool_call_id"] == "call_b"
    assert "Not run" in messages[5]["content"]


def test_the_periodic_task_finds_lost_runs(operator):
    session = ChatSession.objects.create(user=operator)
    run = open_run(session, user=operator, message="Hi", mode="normal")
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.THINKING, heartbeat_at=timezone.now() - timedelta(minutes=5)
    )

    assert detect_lost_runs_task.run() == 1
    assert Run.objects.get(pk=run.pk).stop_reason == StopReason.WORKER_LOST


def test_tool_executions_keep_their_step_and_duration(operator, django_capture_on_commit_callbacks):
    run, _ = run_scripted(
        [CallTool("next_page"), CallTool("next_page", {"n": 1}), Reply("Done.")],
        user=operator,
        capture=django_capture_on_commit_callbacks,
    )

    assert list(run.tool_executions.values_list("step", flat=True)) == [1, 2]
    assert all(
        row.duration_ms >= 0 and row.outcome == ToolExecution.Outcome.OK
        for row in run.tool_executions.all()
    )
