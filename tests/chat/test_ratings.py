"""Rating a run's reply good or bad: who may (every staff member who sees the run),
when (once it has finished), one verdict per person that they can change, audited,
and attributed to the models that answered in the run."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib.contenttypes.models import ContentType

from chat.models import Run, RunRating, RunStatus
from chat.run_calls import calls_of, models_that_answered, request_id_for
from controlplane.models import AuditEvent
from routing.models import OperationLog
from routing.providers import Reply
from tests.chat.runs import make_run
from tests.chat.scripted_runs import (
    run_scripted,
    scripted_tools,  # noqa: F401  (a fixture)
)

pytestmark = pytest.mark.django_db


def url(run: Run) -> str:
    return f"/chat/runs/{run.pk}/rating/"


def finished(run: Run) -> Run:
    Run.objects.filter(pk=run.pk).update(status=RunStatus.STOPPED, stop_reason="completed")
    run.refresh_from_db()
    return run


def log_call(run: Run | None, model: str, status: str = OperationLog.Status.OK) -> OperationLog:
    return OperationLog.objects.create(
        request_id=request_id_for(run.pk) if run else uuid.uuid4().hex,
        operation="agent",
        model_requested=model,
        model_used=model,
        cost_source=OperationLog.CostSource.CATALOG,
        status=status,
    )


@pytest.fixture
def run(operator: Any) -> Run:
    return finished(make_run(operator))


@pytest.mark.parametrize("persona", ["observer", "operator", "owner"])
def test_every_tier_may_rate_a_finished_run(client, persona, request, run):
    person = request.getfixturevalue(persona)
    client.force_login(person)
    response = client.post(url(run), {"verdict": "good"}, headers={"HX-Request": "true"})
    assert response.status_code == 200
    rating = RunRating.objects.get()
    assert (rating.run, rating.rated_by, rating.verdict) == (run, person, "good")
    html = response.content.decode()
    assert "1 good · 0 bad · you said good" in html
    assert 'id="rate-good" aria-pressed="true"' in html


def test_a_person_changes_their_verdict_instead_of_adding_one(client, operator, observer, run):
    client.force_login(operator)
    client.post(url(run), {"verdict": "good"})
    response = client.post(url(run), {"verdict": "bad"}, headers={"HX-Request": "true"})
    assert RunRating.objects.get().verdict == "bad"
    assert "0 good · 1 bad · you said bad" in response.content.decode()
    client.force_login(observer)
    response = client.post(url(run), {"verdict": "good"}, headers={"HX-Request": "true"})
    assert RunRating.objects.count() == 2
    assert "1 good · 1 bad · you said good" in response.content.decode()


def test_each_verdict_is_audited_with_who_gave_it_and_what_it_was_before(client, operator, run):
    client.force_login(operator)
    client.post(url(run), {"verdict": "good"})
    client.post(url(run), {"verdict": "bad"})
    rating = RunRating.objects.get()
    events = AuditEvent.objects.filter(
        content_type=ContentType.objects.get_for_model(RunRating), object_id=str(rating.pk)
    ).order_by("at", "id")
    assert [(e.actor, e.action) for e in events] == [
        (operator, "runrating.created"),
        (operator, "runrating.changed"),
    ]
    assert events[1].before["verdict"] == "good"
    assert events[1].after["verdict"] == "bad"
    assert rating.updated_at >= rating.created_at


def test_a_plain_form_post_goes_back_to_the_run(client, operator, run):
    client.force_login(operator)
    response = client.post(url(run), {"verdict": "good"})
    assert response.status_code == 302
    assert response["Location"] == f"/chat/{run.session_id}/?run={run.pk}"


@pytest.mark.parametrize("verdict", ["", "meh", "GOOD", "x" * 5000])
def test_an_unknown_verdict_is_refused_with_a_clear_error(client, operator, run, verdict):
    client.force_login(operator)
    response = client.post(url(run), {"verdict": verdict})
    assert response.status_code == 400
    assert "rate a reply good or bad" in response.content.decode()
    assert not RunRating.objects.exists()


def test_a_run_still_working_cannot_be_rated_yet(client, operator):
    working = make_run(operator)
    Run.objects.filter(pk=working.pk).update(status=RunStatus.STREAMING)
    client.force_login(operator)
    response = client.post(url(working), {"verdict": "good"})
    assert response.status_code == 409
    assert "is still streaming. Rate its reply once it has finished." in response.content.decode()
    # htmx swaps only 2xx answers: it gets the control with the error in it.
    response = client.post(url(working), {"verdict": "good"}, headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert 'id="rating-error"' in response.content.decode()
    assert "once the run has finished" in response.content.decode()
    assert not RunRating.objects.exists()


def test_outsiders_and_visitors_cannot_rate_or_see_the_control(client, outsider, run):
    assert client.get(url(run)).status_code == 302
    assert client.post(url(run), {"verdict": "good"}).status_code == 302
    client.force_login(outsider)
    assert client.get(url(run)).status_code == 403
    assert client.post(url(run), {"verdict": "good"}).status_code == 403
    assert not RunRating.objects.exists()


def test_an_unknown_run_is_a_404(client, observer):
    client.force_login(observer)
    assert client.get("/chat/runs/999999/rating/").status_code == 404
    assert client.post("/chat/runs/999999/rating/", {"verdict": "good"}).status_code == 404


def test_the_control_shows_everyones_count_and_the_persons_own_verdict(
    client, operator, observer, run
):
    RunRating.objects.create(run=run, rated_by=operator, verdict="bad")
    client.force_login(observer)
    html = client.get(url(run)).content.decode()
    assert "0 good · 1 bad" in html
    assert "you said" not in html
    assert 'id="rate-good" aria-pressed="false"' in html


def test_the_session_page_loads_the_control_under_the_reply(client, observer, run):
    client.force_login(observer)
    html = client.get(f"/chat/{run.session_id}/?run={run.pk}").content.decode()
    reply = html[html.index('id="run-reply-card"') :]
    assert f'hx-get="/chat/runs/{run.pk}/rating/" hx-trigger="load"' in reply


def test_a_verdict_counts_for_the_models_that_answered_in_the_run(client, operator):
    run = finished(make_run(operator))
    other = finished(make_run(operator))
    # Run ids 1 and 12 must not share calls: the prefix ends with a dash.
    Run.objects.filter(pk=other.pk).update(id=int(f"{run.pk}2"))
    other = Run.objects.get(pk=int(f"{run.pk}2"))
    log_call(run, "acme/large")
    log_call(run, "acme/small", OperationLog.Status.CANCELLED)  # stopped mid-reply: it answered
    log_call(run, "acme/broken", OperationLog.Status.ERROR)
    log_call(run, "acme/refused", OperationLog.Status.REFUSED)
    log_call(other, "acme/other")
    log_call(None, "acme/elsewhere")
    assert models_that_answered(run.pk) == ["acme/large", "acme/small"]
    assert calls_of(other.pk).count() == 1
    client.force_login(operator)
    client.post(url(run), {"verdict": "good"})
    assert RunRating.objects.get().answered_by == ["acme/large", "acme/small"]


@pytest.mark.usefixtures("scripted_tools")
def test_a_runs_model_calls_are_found_by_its_prefix(operator, django_capture_on_commit_callbacks):
    run, _ = run_scripted(
        [Reply("Fine.")], user=operator, capture=django_capture_on_commit_callbacks
    )
    assert run.status == RunStatus.STOPPED
    [call] = calls_of(run.pk)
    assert call.request_id.startswith(f"run-{run.pk}-")
    assert models_that_answered(run.pk) == [call.model_used]
