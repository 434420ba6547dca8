"""A run's status changes in one place: along the transition table, written once by
whichever caller gets there first, audited when a person acted; who asked for a stop
and the time paused for an approval are fields of the run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from importlib import import_module

import pytest
from django.apps import apps
from django.utils import timezone

from chat.loop import AgentLoop
from chat.models import TRANSITIONS, ChatSession, Run, RunStatus, StopReason
from chat.run_status import RunMoveRefused, move_run
from chat.runs import open_run, request_stop
from controlplane.approvals import decide_approval
from controlplane.models import AuditEvent
from routing.providers import CallTool, Reply
from tests.chat.scripted_runs import (
    OFFLINE,
    events_of,
    run_scripted,
    scripted_tools,  # noqa: F401  (a fixture)
    stop_reason_of,
)
from tests.scripted_providers import use_scripted

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("scripted_tools")]


def a_queued_run(user) -> Run:
    return open_run(ChatSession.objects.create(user=user), user=user, message="Hi", mode="normal")


def test_a_stopped_run_is_final_and_only_a_resume_sends_a_run_back_to_the_queue():
    assert TRANSITIONS[RunStatus.STOPPED] == frozenset()
    back_to_queue = {source for source, targets in TRANSITIONS.items() if RunStatus.IDLE in targets}
    assert back_to_queue == {RunStatus.WAITING_APPROVAL}
    assert TRANSITIONS[RunStatus.STOPPING] == {RunStatus.STOPPED}


def test_it_refuses_a_move_the_table_does_not_allow_and_writes_nothing(operator):
    run = a_queued_run(operator)
    events = len(events_of(run))

    with pytest.raises(RunMoveRefused, match="cannot become thinking from stopped"):
        move_run(run.pk, RunStatus.THINKING, "Back to life.", sources=(RunStatus.STOPPED,))

    run.refresh_from_db()
    assert run.status == RunStatus.IDLE
    assert len(events_of(run)) == events


def test_a_move_from_a_status_the_run_has_left_changes_nothing(operator):
    run = a_queued_run(operator)
    Run.objects.filter(pk=run.pk).update(status=RunStatus.STOPPED)
    events = len(events_of(run))

    moved = move_run(run.pk, RunStatus.THINKING, "Late worker.", sources=(RunStatus.STREAMING,))

    assert moved is False
    assert Run.objects.get(pk=run.pk).status == RunStatus.STOPPED
    assert len(events_of(run)) == events


def test_a_stop_request_records_who_asked_and_is_audited(operator):
    run = a_queued_run(operator)
    Run.objects.filter(pk=run.pk).update(status=RunStatus.STREAMING)

    assert request_stop(run, user=operator) is True

    run.refresh_from_db()
    assert (run.status, run.stop_requested, run.stop_requested_by) == (
        RunStatus.STOPPING,
        True,
        operator,
    )
    event = AuditEvent.objects.get(action="run.stop_requested")
    assert (event.actor, event.object_id) == (operator, str(run.pk))
    assert (event.before, event.after["status"]) == ({"status": "streaming"}, "stopping")


def test_stopping_a_queued_run_at_once_is_audited_as_the_persons_stop(operator):
    run = a_queued_run(operator)

    assert request_stop(run, user=operator) is True

    run.refresh_from_db()
    assert (run.status, run.stop_requested_by) == (RunStatus.STOPPED, operator)
    event = AuditEvent.objects.get(action="run.stopped")
    assert (event.actor, event.before, event.after["status"]) == (
        operator,
        {"status": "idle"},
        "stopped",
    )


def test_the_loop_names_the_stopper_from_the_field_never_from_the_detail_text(operator, owner):
    run = a_queued_run(operator)
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.THINKING,
        stop_requested=True,
        stop_requested_by=owner,
        status_detail="Stop requested by somebody-else.",
    )

    AgentLoop(Run.objects.get(pk=run.pk)).run_to_end()

    run.refresh_from_db()
    assert (run.status, run.stop_reason) == (RunStatus.STOPPED, StopReason.STOPPED_BY_USER)
    assert run.status_detail == f"Stopped by {owner.get_username()}."
    assert stop_reason_of(run)["suggestion"].startswith(f"{owner.get_username()} stopped")


def test_a_resume_after_an_approval_is_audited_and_the_pause_leaves_the_time_budget(
    operator, operator2, django_capture_on_commit_callbacks
):
    turns = [CallTool("create_task", {"title": "Rotate the keys"}), Reply("Created task.")]
    run, scripted = run_scripted(turns, user=operator, capture=django_capture_on_commit_callbacks)
    assert run.paused_at is not None
    assert "paused_at" not in run.guardrails
    # The run has waited half a minute (moved back rather than waited for).
    Run.objects.filter(pk=run.pk).update(paused_at=run.paused_at - timedelta(seconds=30))

    with use_scripted(OFFLINE, scripted), django_capture_on_commit_callbacks(execute=True):
        decide_approval(run.pending_approval, user=operator2, approve=True)

    run.refresh_from_db()
    assert (run.status, run.stop_reason) == (RunStatus.STOPPED, StopReason.COMPLETED)
    assert run.paused_at is None
    assert run.paused_seconds >= 30
    event = AuditEvent.objects.get(action="run.resumed")
    assert (event.actor, event.before, event.after["status"]) == (
        operator2,
        {"status": "waiting_approval"},
        "idle",
    )


def test_the_migration_carries_pause_time_and_the_stopper_out_of_text(operator):
    migration = import_module("chat.migrations.0005_run_stop_requested_by_and_pause")
    paused = a_queued_run(operator)
    Run.objects.filter(pk=paused.pk).update(
        guardrails={"paused_at": 1_700_000_000.0, "paused_seconds": 12.5, "loop": {"count": 2}}
    )
    stopping = a_queued_run(operator)
    Run.objects.filter(pk=stopping.pk).update(
        status=RunStatus.STOPPING,
        stop_requested=True,
        status_detail=f"Stop requested by {operator.get_username()}.",
    )

    migration.carry_out_of_text(apps, None)

    paused.refresh_from_db()
    assert paused.paused_at == datetime.fromtimestamp(1_700_000_000, tz=UTC)
    assert paused.paused_seconds == 12.5
    assert paused.guardrails == {"loop": {"count": 2}}
    assert Run.objects.get(pk=stopping.pk).stop_requested_by == operator
    assert timezone.is_aware(paused.paused_at)
