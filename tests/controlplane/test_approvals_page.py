"""The Approvals page (and Home's live fragment): Approve and Reject only for someone
the decision would accept, the reason for everyone else, and each decided approval
with its outcome, time, decider and what it was about."""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, models
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from chat.models import Run
from controlplane.approval_subjects import subject_link
from controlplane.approvals import (
    decide_approval,
    expire_due_approvals,
    request_approval,
    withdraw_approval,
)
from controlplane.consumers import _render_pending_approvals
from controlplane.models import Approval, FeatureToggle
from controlplane.tiers import Tier
from healthmon.models import PullRequest, Repository
from selfheal.models import PlaybookExecution, Task
from tests.chat.runs import make_run
from tests.selfheal import make_task

pytestmark = pytest.mark.django_db

BUTTONS = re.compile(r"<button[^>]*>(Approve|Reject)</button>")


def page_for(client: Client, user: Any) -> str:
    client.force_login(user)
    response = client.get("/approvals/")
    assert response.status_code == 200
    return response.content.decode()


def row_of(html: str, approval: Approval) -> str:
    match = re.search(rf'<li class="approval" id="approval-{approval.pk}">.*?</li>', html, re.S)
    assert match, f"approval #{approval.pk} is not listed"
    return match.group(0)


def decision_of(html: str, approval: Approval) -> str:
    match = re.search(rf'<tr id="decision-{approval.pk}">.*?</tr>', html, re.S)
    assert match, f"approval #{approval.pk} is not among the recent decisions"
    return match.group(0)


def owners_approval(requested_by: Any) -> Approval:
    return request_approval(
        action="routing.costly_call",
        requested_by=requested_by,
        reason="Deep research on the outage",
        amount=Decimal("2.50"),
    )


def test_an_operator_sees_no_buttons_on_an_owners_approval_and_why(
    client: Client, operator: Any, operator2: Any
) -> None:
    approval = owners_approval(operator2)

    row = row_of(page_for(client, operator), approval)

    assert not BUTTONS.search(row)
    assert "This approval needs the Owner tier (it is about money)." in row


def test_the_requester_sees_no_buttons_on_their_own_request(client: Client, operator: Any) -> None:
    approval = request_approval(action="test.thing", requested_by=operator, reason="why")

    row = row_of(page_for(client, operator), approval)

    assert not BUTTONS.search(row)
    assert "Nobody can decide their own request" in row


def test_an_observer_sees_no_buttons_and_why(client: Client, observer: Any, operator: Any) -> None:
    approval = request_approval(action="test.thing", requested_by=operator, reason="why")

    row = row_of(page_for(client, observer), approval)

    assert not BUTTONS.search(row)
    assert "Your tier cannot decide approvals." in row


def test_an_owner_sees_the_buttons(client: Client, owner: Any, operator: Any) -> None:
    approval = owners_approval(operator)

    row = row_of(page_for(client, owner), approval)

    assert BUTTONS.findall(row) == ["Approve", "Reject"]
    assert "approval-refusal" not in row


def test_an_operator_sees_the_buttons_on_an_operator_approval(
    client: Client, operator: Any, operator2: Any
) -> None:
    approval = request_approval(action="test.thing", requested_by=operator2, reason="why")

    assert BUTTONS.findall(row_of(page_for(client, operator), approval)) == ["Approve", "Reject"]


def test_the_live_fragment_offers_the_same_per_viewer(
    operator: Any, operator2: Any, owner: Any
) -> None:
    approval = owners_approval(operator2)

    for_operator = row_of(_render_pending_approvals(operator), approval)
    for_owner = row_of(_render_pending_approvals(owner), approval)
    for_requester = row_of(_render_pending_approvals(operator2), approval)

    assert not BUTTONS.search(for_operator)
    assert "needs the Owner tier" in for_operator
    assert BUTTONS.findall(for_owner) == ["Approve", "Reject"]
    assert not BUTTONS.search(for_requester)
    assert "Nobody can decide their own request" in for_requester


def test_home_offers_the_same_per_viewer(client: Client, operator: Any, operator2: Any) -> None:
    approval = owners_approval(operator2)
    client.force_login(operator)

    row = row_of(client.get("/").content.decode(), approval)

    assert not BUTTONS.search(row)
    assert "needs the Owner tier" in row


def test_posting_a_decision_the_page_does_not_offer_is_still_refused(
    client: Client, operator: Any, operator2: Any
) -> None:
    approval = owners_approval(operator2)
    client.force_login(operator)

    response = client.post(f"/approvals/{approval.pk}/decide/", {"decision": "approve"})

    assert response.status_code == 302
    approval.refresh_from_db()
    assert approval.status == Approval.Status.PENDING
    assert approval.decided_by is None
    page = client.get(response["Location"]).content.decode()
    assert "This approval needs the Owner tier (it is about money)." in page


def test_an_approved_request_shows_outcome_time_decider_and_note(
    client: Client, operator: Any, owner: Any
) -> None:
    approval = owners_approval(operator)
    decide_approval(approval, user=owner, approve=True, note="Worth it")
    approval.refresh_from_db()
    assert approval.decided_at is not None

    row = decision_of(page_for(client, owner), approval)

    assert '<td class="status-approved">Approved</td>' in row
    assert f'<time datetime="{approval.decided_at.isoformat()}">' in row
    assert timezone.localtime(approval.decided_at).strftime("%Y-%m-%d %H:%M:%S") in row
    assert "<td>wendy-owner</td>" in row
    assert "Worth it" in row


def test_a_rejection_shows_as_rejected_with_its_decider(
    client: Client, operator: Any, operator2: Any
) -> None:
    approval = request_approval(action="test.thing", requested_by=operator, reason="why")
    decide_approval(approval, user=operator2, approve=False)

    row = decision_of(page_for(client, operator), approval)

    assert '<td class="status-rejected">Rejected</td>' in row
    assert "<td>opal-operator</td>" in row


def test_expired_and_withdrawn_requests_say_so_and_when(
    client: Client, operator: Any, owner: Any
) -> None:
    expired = request_approval(action="test.thing", requested_by=operator, reason="why")
    Approval.objects.filter(pk=expired.pk).update(expires_at=timezone.now())
    expire_due_approvals()
    withdrawn = request_approval(action="test.thing", requested_by=operator, reason="why")
    withdraw_approval(withdrawn.pk, why="the run was stopped")

    html = page_for(client, owner)

    expired_row, withdrawn_row = decision_of(html, expired), decision_of(html, withdrawn)
    assert '<td class="status-expired">Expired</td>' in expired_row
    assert "nobody in time" in expired_row
    assert "<time datetime=" in expired_row
    assert '<td class="status-withdrawn">Withdrawn</td>' in withdrawn_row
    assert "withdrawn by its asker" in withdrawn_row
    assert "the run was stopped" in withdrawn_row
    assert "<time datetime=" in withdrawn_row


# What each kind of approval the product asks for is about, and where its link goes.


def a_run(user: Any) -> Run:
    return make_run(user)


def a_task(user: Any) -> Task:
    return make_task(title="Needs a GPU worker")


def a_toggle(user: Any) -> FeatureToggle:
    return FeatureToggle.objects.create(key="demo.new-dashboard")


def a_pull_request(user: Any) -> PullRequest:
    repository = Repository.objects.create(name="shop", path="/srv/shop")
    return PullRequest.objects.create(
        repository=repository, base="main", branch="fix/lint", title="Fix lint"
    )


def a_repair(user: Any) -> PlaybookExecution:
    return PlaybookExecution.objects.create(playbook="repair", started_by=user)


SUBJECTS: list[tuple[Callable[[Any], models.Model], Callable[[Any], str], str]] = [
    (a_run, lambda run: f"/chat/{run.session_id}/", "Run #{pk} (idle)"),
    (a_task, lambda task: f"/admin/selfheal/task/{task.pk}/change/", "Task #{pk} Needs a GPU"),
    (a_toggle, lambda toggle: "/toggles/#toggle-demo.new-dashboard", "demo.new-dashboard"),
    (
        a_pull_request,
        lambda pr: f"/admin/healthmon/pullrequest/{pr.pk}/change/",
        "shop PR (proposal {pk}): Fix lint",
    ),
    (
        a_repair,
        lambda execution: f"/admin/selfheal/playbookexecution/{execution.pk}/change/",
        "repair #{pk}",
    ),
]


@pytest.mark.parametrize(
    ("make", "url_of", "label"), SUBJECTS, ids=lambda v: getattr(v, "__name__", "")
)
def test_a_decided_approval_links_to_what_it_was_about(
    client: Client,
    operator: Any,
    owner: Any,
    make: Callable[[Any], models.Model],
    url_of: Callable[[Any], str],
    label: str,
) -> None:
    subject = make(operator)
    approval = request_approval(
        action="test.thing",
        requested_by=operator,
        reason="why",
        subject=subject,
        required_tier=Tier.OWNER,
    )
    decide_approval(approval, user=owner, approve=True)

    link = subject_link(approval)
    row = decision_of(page_for(client, owner), approval)

    assert link is not None
    assert link.url == url_of(subject)
    assert label.format(pk=subject.pk) in link.label
    assert f'<a href="{link.url}">' in row
    assert client.get(link.url.split("#")[0]).status_code == 200


def test_a_model_call_through_the_gateway_has_nothing_to_link(
    client: Client, operator: Any, owner: Any
) -> None:
    approval = owners_approval(operator)
    decide_approval(approval, user=owner, approve=False)

    row = decision_of(page_for(client, owner), approval)

    assert subject_link(approval) is None
    assert '<td class="approval-subject">—</td>' in row


def test_a_deleted_subject_is_named_without_a_link(
    client: Client, operator: Any, owner: Any
) -> None:
    task = make_task(title="Gone soon")
    approval = request_approval(
        action="test.thing", requested_by=operator, reason="why", subject=task
    )
    decide_approval(approval, user=owner, approve=True)
    Task.objects.filter(pk=task.pk).delete()

    link = subject_link(Approval.objects.get(pk=approval.pk))

    assert link is not None
    assert link.url is None
    assert link.label == f"Task {task.pk} (deleted)"


def a_toggle_named(user: Any) -> FeatureToggle:
    return FeatureToggle.objects.create(key=f"demo.toggle-{FeatureToggle.objects.count()}")


def queries_for_page(client: Client) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/approvals/").status_code == 200
    return len(queries)


def test_the_page_reads_the_same_number_of_queries_however_many_rows(
    client: Client, operator: Any, operator2: Any, owner: Any
) -> None:
    def decide_one_of_each() -> None:
        for make in (a_run, a_task, a_toggle_named):
            approval = request_approval(
                action="test.thing", requested_by=operator, reason="why", subject=make(operator)
            )
            decide_approval(approval, user=owner, approve=True)
        request_approval(action="test.thing", requested_by=operator2, reason="why")
        owners_approval(operator2)

    client.force_login(operator)
    decide_one_of_each()
    few = queries_for_page(client)
    for _ in range(3):
        decide_one_of_each()

    assert queries_for_page(client) == few
