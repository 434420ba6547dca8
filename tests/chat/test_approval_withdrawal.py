"""A run stopped while it waits for an approval withdraws the approval: nobody can
approve something that will never run, and a late decision is refused saying why."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from chat.models import RunStatus, StopReason, ToolExecution
from chat.runs import request_stop
from controlplane.approvals import ApprovalError, decide_approval, pending_approvals
from controlplane.models import Approval, AuditEvent
from selfheal.models import Task
from tests.chat.scripted_runs import run_scripted
from tests.scripted_providers import CallTool, Reply

pytestmark = pytest.mark.django_db


def paused_run(user: Any, capture: Any) -> Any:
    turns = [CallTool("create_task", {"title": "Rotate the keys"}), Reply("Created it.")]
    run, _ = run_scripted(turns, user=user, capture=capture)
    assert run.status == RunStatus.WAITING_APPROVAL
    return run


def test_stopping_a_run_that_waits_for_an_approval_withdraws_the_approval(
    operator: Any, operator2: Any, django_capture_on_commit_callbacks: Any
) -> None:
    run = paused_run(operator, django_capture_on_commit_callbacks)
    approval = run.pending_approval

    with django_capture_on_commit_callbacks(execute=True):
        assert request_stop(run, user=operator)

    approval.refresh_from_db()
    assert approval.status == Approval.Status.WITHDRAWN
    assert f"Run #{run.pk} stopped" in approval.outcome
    assert approval not in pending_approvals()
    with pytest.raises(ApprovalError, match=r"withdrawn.*nothing to decide"):
        decide_approval(approval, user=operator2, approve=True)
    approval.refresh_from_db()
    assert (approval.status, approval.decided_by) == (Approval.Status.WITHDRAWN, None)
    event = AuditEvent.objects.get(action="approval.withdrawn")
    assert (event.actor, event.after["status"]) == (operator, "withdrawn")
    run.refresh_from_db()
    assert (run.status, run.stop_reason) == (RunStatus.STOPPED, StopReason.STOPPED_BY_USER)
    assert run.tool_executions.get().outcome == ToolExecution.Outcome.REFUSED
    assert not Task.objects.exists()


def test_the_approvals_page_refuses_a_decision_on_a_withdrawn_approval(
    client: Client, operator: Any, operator2: Any, django_capture_on_commit_callbacks: Any
) -> None:
    run = paused_run(operator, django_capture_on_commit_callbacks)
    approval = run.pending_approval
    request_stop(run, user=operator)
    client.force_login(operator2)

    response = client.post(
        reverse("approval_decide", args=[approval.pk]), {"decision": "approve"}, follow=True
    )

    assert "withdrawn" in response.content.decode()
    approval.refresh_from_db()
    assert approval.status == Approval.Status.WITHDRAWN
    assert not Task.objects.exists()


def test_an_approval_decided_before_the_stop_is_left_as_decided(
    operator: Any, operator2: Any, django_capture_on_commit_callbacks: Any
) -> None:
    run = paused_run(operator, django_capture_on_commit_callbacks)
    approval = run.pending_approval
    decide_approval(approval, user=operator2, approve=False, note="not now")  # waiter not run

    request_stop(run, user=operator)

    approval.refresh_from_db()
    assert approval.status == Approval.Status.REJECTED
    assert not AuditEvent.objects.filter(action="approval.withdrawn").exists()
