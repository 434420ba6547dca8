"""Every stop reason, reached by a scripted model, with its recovery suggestion and
next action in the run's `stop_reason` event."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from chat import runs, streams
from chat.events import emit
from chat.models import ChatSession, Run, RunStatus, StopReason, StreamEvent, ToolExecution
from chat.runs import detect_lost_runs, request_stop, start_run
from chat.stop_reasons import ADVICE, explain
from controlplane.approvals import decide_approval
from controlplane.models import Approval
from routing.budgets import budget_day
from routing.calls import CALLER_WENT_AWAY
from routing.models import Budget, BudgetDay, OperationLog
from selfheal.models import Task
from tests.chat.scripted_runs import (
    OFFLINE,
    assert_gap_free,
    events_of,
    last_data,
    reseed,
    run_scripted,
    scripted_tools,  # noqa: F401  (a fixture)
    stop_reason_of,
    switch,
    types_of,
)
from tests.controlplane.test_background import wait_for
from tests.scripted_providers import (
    CallTool,
    Delay,
    ProviderError,
    Reply,
    ScriptedProvider,
    use_scripted,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("scripted_tools")]


def assert_stopped(run: Run, reason: str) -> dict:
    assert run.status == RunStatus.STOPPED
    assert run.stop_reason == reason
    assert run.finished_at is not None
    stop = stop_reason_of(run)
    assert stop["reason"] == reason
    assert stop["label"]
    assert len(stop["suggestion"]) > 40
    assert stop["next_action"]["label"]
    assert stop["next_action"]["kind"]
    assert last_data(run, StreamEvent.Type.STATUS)["status"] == RunStatus.STOPPED
    assert_gap_free(run)
    return stop


def test_every_stop_reason_has_words_a_suggestion_and_a_next_action(operator):
    run = Run(
        session=ChatSession(user=operator),
        mode="normal",
        max_steps=10,
        max_wall_clock_seconds=300,
        max_cost=Decimal("0.5"),
        pending_approval_id=7,
    )
    assert set(ADVICE) == set(StopReason)
    for reason in StopReason:
        explained = explain(reason, run=run)
        assert explained["reason"] == reason
        assert explained["suggestion"].endswith((".", ")"))
        assert explained["next_action"]["kind"] in {
            "follow_up",
            "retry",
            "retry_other_mode",
            "raise_budget",
            "approve",
            "enable_toggle",
        }


def test_a_run_the_model_answers_completes_and_suggests_a_follow_up(
    operator, django_capture_on_commit_callbacks
):
    run, _ = run_scripted(
        [Reply("The queue is empty.")], user=operator, capture=django_capture_on_commit_callbacks
    )

    stop = assert_stopped(run, StopReason.COMPLETED)
    assert stop["next_action"]["kind"] == "follow_up"
    assert "follow-up" in stop["suggestion"]
    assert types_of(run)[-4:] == ["status", "budget", "guardrails", "stop_reason"]


def test_a_run_out_of_steps_stops_with_max_steps_and_offers_twice_the_steps(
    operator, django_capture_on_commit_callbacks
):
    turns = [CallTool("next_page", {"after": n}) for n in range(3)] + [Reply("unreached")]
    run, scripted = run_scripted(
        turns, user=operator, capture=django_capture_on_commit_callbacks, limits={"max_steps": 3}
    )

    stop = assert_stopped(run, StopReason.MAX_STEPS)
    assert run.steps == 3
    assert run.tool_executions.count() == 3
    assert scripted.remaining == 1
    assert stop["next_action"] == {
        "kind": "raise_budget",
        "label": "Run again with 6 steps",
        "budget": "max_steps",
        "value": "6",
        "mode": "normal",
        "tier": "operator",
    }
    assert last_data(run, "budget")["steps"] == {
        "used": 3,
        "limit": 3,
        "percent": 100.0,
        "state": "red",
    }


def test_a_run_out_of_time_stops_with_wall_clock(operator, django_capture_on_commit_callbacks):
    turns = [CallTool("next_page"), Delay(1.2), CallTool("next_page", {"n": 2}), Reply("late")]
    run, _ = run_scripted(
        turns,
        user=operator,
        capture=django_capture_on_commit_callbacks,
        limits={"max_wall_clock_seconds": 1},
    )

    stop = assert_stopped(run, StopReason.WALL_CLOCK)
    assert "time limit of 1 s" in stop["suggestion"]
    assert stop["next_action"]["budget"] == "max_wall_clock_seconds"
    wall_clock = last_data(run, "budget")["wall_clock"]
    assert wall_clock["used"] >= 1.0
    assert wall_clock["state"] == "red"


def test_a_run_out_of_money_stops_with_cost_budget_and_only_an_owner_may_raise_it(
    operator, django_capture_on_commit_callbacks
):
    turns = [
        CallTool("next_page", cost="0.006"),
        CallTool("next_page", {"n": 2}, cost="0.006"),
        Reply("unreached", cost="0.006"),
    ]
    run, _ = run_scripted(
        turns,
        user=operator,
        capture=django_capture_on_commit_callbacks,
        limits={"max_cost": "0.01"},
    )

    stop = assert_stopped(run, StopReason.COST_BUDGET)
    assert run.cost == Decimal("0.012")
    assert stop["next_action"]["tier"] == "owner"
    assert stop["next_action"]["value"] == "0.02"
    assert last_data(run, "budget")["cost"]["used"] == "0.012"


def test_a_daily_budget_that_refuses_the_next_call_stops_the_run_with_cost_budget(
    operator, django_capture_on_commit_callbacks
):
    budget = Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal("0.10"))
    BudgetDay.objects.create(budget=budget, day=budget_day(), limit="0.10", spent="0.11")
    run, scripted = run_scripted(
        [Reply("unreached")], user=operator, capture=django_capture_on_commit_callbacks
    )

    stop = assert_stopped(run, StopReason.COST_BUDGET)
    assert "daily spending budget" in stop["suggestion"]
    assert stop["next_action"]["kind"] == "retry_other_mode"
    assert last_data(run, "error")["message"]
    assert scripted.requests == []


def test_the_same_call_five_times_in_a_row_stops_with_loop_detected(
    operator, django_capture_on_commit_callbacks
):
    turns = [CallTool("next_page", {"page": 1}) for _ in range(5)] + [Reply("unreached")]
    run, _ = run_scripted(turns, user=operator, capture=django_capture_on_commit_callbacks)

    stop = assert_stopped(run, StopReason.LOOP_DETECTED)
    assert run.tool_executions.count() == 5
    assert "next_page" in stop["suggestion"]
    assert stop["next_action"] == {
        "kind": "retry_other_mode",
        "label": "Retry in Deep research mode",
        "mode": "deep_research",
    }
    assert last_data(run, "guardrails")["loop"] == {"count": 5, "threshold": 5}


def test_three_steps_that_change_nothing_stop_with_no_progress(
    operator, django_capture_on_commit_callbacks
):
    # Different arguments each time (no loop), the same result each time (no progress).
    turns = [CallTool("same_answer", {"try": n}) for n in range(3)] + [Reply("unreached")]
    run, _ = run_scripted(turns, user=operator, capture=django_capture_on_commit_callbacks)

    stop = assert_stopped(run, StopReason.NO_PROGRESS)
    assert run.steps == 3
    guardrails = last_data(run, "guardrails")
    assert guardrails["no_progress"] == {"count": 3, "threshold": 3}
    assert guardrails["loop"] == {"count": 1, "threshold": 5}
    assert "stronger model" in stop["suggestion"]


def test_one_failure_three_times_stops_with_repeated_failure_and_names_the_error(
    operator, django_capture_on_commit_callbacks
):
    turns = [CallTool("flaky", {"attempt": n}) for n in range(3)] + [Reply("unreached")]
    run, _ = run_scripted(turns, user=operator, capture=django_capture_on_commit_callbacks)

    stop = assert_stopped(run, StopReason.REPEATED_FAILURE)
    fingerprints = set(run.tool_executions.values_list("fingerprint", flat=True))
    assert len(fingerprints) == 1
    fingerprint = fingerprints.pop()
    assert run.retries_by_fingerprint == {fingerprint: 3}
    assert last_data(run, "budget")["retries"] == {fingerprint: 3}
    assert last_data(run, "guardrails")["repeated_failure"] == {"count": 3, "threshold": 3}
    assert "refused after" in stop["suggestion"]
    assert "ConnectionError" in last_data(run, "error")["message"]
    assert "ConnectionError" in run.last_error


def test_the_retry_limit_is_the_runs_own(operator, django_capture_on_commit_callbacks):
    turns = [CallTool("flaky", {"attempt": n}) for n in range(2)] + [Reply("unreached")]
    run, _ = run_scripted(
        turns,
        user=operator,
        capture=django_capture_on_commit_callbacks,
        limits={"max_retries_per_fingerprint": 2},
    )

    assert_stopped(run, StopReason.REPEATED_FAILURE)
    assert run.tool_executions.count() == 2


def test_a_risky_tool_pauses_the_run_for_an_approval_and_says_who_can_decide(
    operator, django_capture_on_commit_callbacks
):
    turns = [CallTool("create_task", {"title": "Rotate the keys"}), Reply("Created it.")]
    run, _ = run_scripted(turns, user=operator, capture=django_capture_on_commit_callbacks)

    assert run.status == RunStatus.WAITING_APPROVAL
    assert run.stop_reason == StopReason.AWAITING_APPROVAL
    approval = run.pending_approval
    assert approval.action == "chat.risky_tool"
    assert approval.requested_by == operator
    assert approval.proposal["tool"] == "create_task"
    assert approval.proposal["arguments"] == {"title": "Rotate the keys"}
    assert not Task.objects.exists()
    assert types_of(run)[-6:] == [
        "status",
        "tool_start",
        "budget",
        "guardrails",
        "approval",
        "stop_reason",
    ]
    assert last_data(run, "approval") == {
        "approval_id": approval.pk,
        "tool": "create_task",
        "arguments": {"title": "Rotate the keys"},
        "reason": approval.reason,
    }
    stop = stop_reason_of(run)
    assert stop["reason"] == StopReason.AWAITING_APPROVAL
    assert f"approval #{approval.pk}" in stop["suggestion"]
    assert stop["next_action"] == {
        "kind": "approve",
        "label": f"Decide approval #{approval.pk}",
        "approval_id": approval.pk,
        "url": "/approvals/",
    }
    assert_gap_free(run)


def test_an_approved_risky_tool_runs_and_the_run_carries_on_to_completion(
    operator, operator2, django_capture_on_commit_callbacks
):
    turns = [CallTool("create_task", {"title": "Rotate the keys"}), Reply("Created task.")]
    run, scripted = run_scripted(turns, user=operator, capture=django_capture_on_commit_callbacks)
    approval = run.pending_approval

    with use_scripted(OFFLINE, scripted), django_capture_on_commit_callbacks(execute=True):
        decide_approval(approval, user=operator2, approve=True)

    run.refresh_from_db()
    assert_stopped(run, StopReason.COMPLETED)
    task = Task.objects.get()
    assert (task.title, task.source, task.payload["chat_run_id"]) == (
        "Rotate the keys",
        "chat",
        run.pk,
    )
    execution = run.tool_executions.get()
    assert execution.outcome == ToolExecution.Outcome.OK
    assert execution.result["id"] == task.pk
    assert [e.data["execution_id"] for e in events_of(run, "tool_start")] == [execution.pk]
    # The row said "awaiting approval" while paused, "running" once granted, then "ok".
    assert [e.data["outcome"] for e in events_of(run, "tool_start")] == ["awaiting_approval"]
    assert [e.data["outcome"] for e in events_of(run, "tool_result")] == ["running", "ok"]
    assert run.pending_approval_id is None
    assert run.steps == 2
    # The model saw the approved tool's result.
    assert scripted.requests[-1].messages[-1]["role"] == "tool"


def test_a_rejected_risky_tool_stops_the_run_with_the_rejection_and_its_note(
    operator, operator2, django_capture_on_commit_callbacks
):
    turns = [CallTool("create_task", {"title": "Drop the database"}), Reply("unreached")]
    run, scripted = run_scripted(turns, user=operator, capture=django_capture_on_commit_callbacks)

    with use_scripted(OFFLINE, scripted), django_capture_on_commit_callbacks(execute=True):
        decide_approval(run.pending_approval, user=operator2, approve=False, note="Not in prod")

    run.refresh_from_db()
    stop = assert_stopped(run, StopReason.STOPPED_BY_USER)
    assert "opal-operator rejected approval" in stop["suggestion"]
    assert "Not in prod" in stop["suggestion"]
    assert "rejected by opal-operator: Not in prod" in run.status_detail
    execution = run.tool_executions.get()
    assert execution.outcome == ToolExecution.Outcome.REFUSED
    assert last_data(run, "tool_result")["outcome"] == "refused"
    assert not Task.objects.exists()
    assert scripted.remaining == 1


def test_an_approval_that_expires_stops_the_paused_run(
    operator, django_capture_on_commit_callbacks
):
    from controlplane.approvals import expire_due_approvals

    turns = [CallTool("create_task", {"title": "Later"})]
    run, _ = run_scripted(turns, user=operator, capture=django_capture_on_commit_callbacks)
    Approval.objects.filter(pk=run.pending_approval_id).update(expires_at=timezone.now())

    with django_capture_on_commit_callbacks(execute=True):
        assert expire_due_approvals() == 1

    run.refresh_from_db()
    stop = assert_stopped(run, StopReason.AWAITING_APPROVAL)
    assert "expired" in stop["suggestion"]
    assert stop["next_action"]["kind"] == "retry"


def test_a_model_call_that_needs_approval_pauses_and_resumes_once_an_owner_approves(
    operator, owner, django_capture_on_commit_callbacks
):
    from routing.models import Route

    route = Route.objects.get(operation="agent")
    route.spends_money = True
    with django_capture_on_commit_callbacks(execute=True):
        route.save()
    run, scripted = run_scripted(
        [Reply("Approved answer.")], user=operator, capture=django_capture_on_commit_callbacks
    )

    assert run.status == RunStatus.WAITING_APPROVAL
    approval = run.pending_approval
    assert approval.action == "routing.call"
    assert last_data(run, "approval")["tool"] == ""
    assert scripted.requests == []

    with use_scripted(OFFLINE, scripted), django_capture_on_commit_callbacks(execute=True):
        decide_approval(approval, user=owner, approve=True)

    run.refresh_from_db()
    assert_stopped(run, StopReason.COMPLETED)
    assert run.steps == 1
    assert len(scripted.requests) == 1


def test_a_queued_run_stopped_before_a_worker_takes_it_stops_at_once(operator):
    session = ChatSession.objects.create(user=operator)
    # No on-commit callbacks run: nothing picks the run up.
    run = start_run(session, user=operator, message="Hello", mode="normal")

    assert request_stop(run, user=operator) is True

    run.refresh_from_db()
    stop = assert_stopped(run, StopReason.STOPPED_BY_USER)
    assert stop["suggestion"].startswith("oscar-operator stopped the run")
    assert runs.run_agent(run.pk) == ""  # the task, when it comes, leaves it alone
    assert request_stop(run, user=operator) is False


@pytest.mark.django_db(transaction=True)
def test_a_stop_requested_mid_stream_ends_the_run_while_the_model_is_still_silent(operator):
    reseed()
    session = ChatSession.objects.create(user=operator)
    # The second model call takes 4 s to start answering: the stop comes meanwhile,
    # and ends the run without waiting for the model (no word of its answer is kept).
    scripted = ScriptedProvider([CallTool("queue_summary"), Delay(4), Reply("never shown")])
    runs: list[Run] = []

    def work() -> None:
        try:
            runs.append(start_run(session, user=operator, message="Tell me slowly", mode="normal"))
        finally:
            connection.close()

    with use_scripted(OFFLINE, scripted):
        worker = threading.Thread(target=work)
        worker.start()
        run = wait_for(
            lambda: Run.objects.filter(session=session, steps=2, status="streaming").first()
        )
        assert request_stop(run, user=operator)
        wait_for(lambda: Run.objects.filter(pk=run.pk, status="stopped").first(), timeout=30)
        worker.join(timeout=30)
        assert streams.wait_for_abandoned_calls(timeout=30)

    run.refresh_from_db()
    assert "never" not in "".join(event.data["text"] for event in events_of(run, "token"))
    assert not run.messages.filter(content__contains="never").exists()
    stop = assert_stopped(run, StopReason.STOPPED_BY_USER)
    assert "oscar-operator stopped the run" in stop["suggestion"]
    statuses = [e.data["status"] for e in events_of(run, "status")]
    assert statuses[-3:] == ["streaming", "stopping", "stopped"]
    # The call given up mid-stream was closed and logged all the same.
    # A call its caller stopped is cancelled, not an error of the model.
    (cancelled,) = OperationLog.objects.filter(error=CALLER_WENT_AWAY)
    assert cancelled.status == OperationLog.Status.CANCELLED


def test_a_provider_failure_stops_the_run_with_provider_error_and_its_message(
    operator, django_capture_on_commit_callbacks
):
    turns = [ProviderError("upstream exploded", status=502, retryable=False)]
    run, _ = run_scripted(turns, user=operator, capture=django_capture_on_commit_callbacks)

    stop = assert_stopped(run, StopReason.PROVIDER_ERROR)
    assert "upstream exploded" in last_data(run, "error")["message"]
    assert "upstream exploded" in run.last_error
    assert stop["next_action"]["kind"] == "retry_other_mode"
    assert types_of(run)[-5:] == ["status", "budget", "guardrails", "stop_reason", "error"]


def test_a_provider_failure_mid_stream_keeps_what_was_streamed(
    operator, django_capture_on_commit_callbacks
):
    turns = [Reply("Half an answer", error_after=ProviderError("connection reset"))]
    run, _ = run_scripted(turns, user=operator, capture=django_capture_on_commit_callbacks)

    assert_stopped(run, StopReason.PROVIDER_ERROR)
    assert "".join(e.data["text"] for e in events_of(run, "token")) == "Half an answer"
    assert run.messages.filter(role="assistant", content="Half an answer").exists()


def test_a_run_whose_worker_died_is_stopped_as_worker_lost_and_keeps_its_events(operator):
    session = ChatSession.objects.create(user=operator)
    run = start_run(session, user=operator, message="Hello", mode="normal")
    long_ago = timezone.now() - timedelta(seconds=31)
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.STREAMING, started_at=long_ago, heartbeat_at=long_ago
    )
    emit(run.pk, "token", {"text": "Half a thought"})
    alive = start_run(session, user=operator, message="Again", mode="normal")
    Run.objects.filter(pk=alive.pk).update(status=RunStatus.STREAMING, heartbeat_at=timezone.now())
    queued = start_run(session, user=operator, message="Queued", mode="normal")

    assert detect_lost_runs() == [run.pk]

    run.refresh_from_db()
    stop = assert_stopped(run, StopReason.WORKER_LOST)
    assert "kept" in stop["suggestion"]
    assert [e.data["text"] for e in events_of(run, "token")] == ["Half a thought"]
    assert "No heartbeat" in last_data(run, "error")["message"]
    assert Run.objects.get(pk=alive.pk).status == RunStatus.STREAMING
    assert Run.objects.get(pk=queued.pk).status == RunStatus.IDLE
    assert detect_lost_runs() == []


def test_a_queued_run_nobody_picks_up_in_half_an_hour_is_lost(operator):
    session = ChatSession.objects.create(user=operator)
    run = start_run(session, user=operator, message="Hello", mode="normal")

    assert detect_lost_runs(timezone.now() + timedelta(seconds=1799)) == []
    assert detect_lost_runs(timezone.now() + timedelta(seconds=1801)) == [run.pk]
    assert "No worker picked the run up" in Run.objects.get(pk=run.pk).status_detail


def run_switched_off_while_queued(key: str, user: Any, capture: Any) -> tuple[Run, Any]:
    """A run opened with its switches on, whose switch `key` goes off before a worker
    picks it up (a run started with it off is refused up front: test_views)."""
    scripted = ScriptedProvider([Reply("unreached")])
    session = ChatSession.objects.create(user=user)
    run = runs.open_run(session, user=user, message="Check the queue for me.", mode="normal")
    switch(key, False, capture)
    with use_scripted(OFFLINE, scripted):
        runs.run_agent(run.pk)
    run.refresh_from_db()
    return run, scripted


def test_switching_chat_runs_off_stops_a_run_with_toggle_off(
    operator, django_capture_on_commit_callbacks
):
    run, scripted = run_switched_off_while_queued(
        "chat.runs.enabled", operator, django_capture_on_commit_callbacks
    )

    stop = assert_stopped(run, StopReason.TOGGLE_OFF)
    assert stop["next_action"] == {
        "kind": "enable_toggle",
        "label": "Switch chat.runs.enabled on",
        "toggle": "chat.runs.enabled",
        "url": "/toggles/?toggle=chat.runs.enabled#toggle-chat.runs.enabled",
        "tier": "owner",
    }
    assert scripted.requests == []
    assert run.steps == 0


def test_switching_the_agent_operation_off_stops_a_run_with_toggle_off(
    operator, django_capture_on_commit_callbacks
):
    run, _ = run_switched_off_while_queued(
        "operation.agent.enabled", operator, django_capture_on_commit_callbacks
    )

    stop = assert_stopped(run, StopReason.TOGGLE_OFF)
    assert stop["next_action"]["toggle"] == "operation.agent.enabled"
