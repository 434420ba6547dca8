"""The Self-heal and Engine pages: who sees them, who may act, what they show, and
query counts that stay flat as data grows."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext

from selfheal import engine
from selfheal.models import AutoHealRule, PlaybookExecution, Task, TaskStatus
from selfheal.playbooks import run_playbook
from tests.selfheal import expire_lease, make_task, make_worker, stored

pytestmark = pytest.mark.django_db

INDEX = "/selfheal/"
ENGINE = "/selfheal/engine/"


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def running_task(title: str = "Rotate the keys") -> Task:
    worker, _ = make_worker(f"w-{title[:20].replace(' ', '-').lower()}")
    task = make_task(title)
    claimed = engine.claim(worker)
    assert claimed is not None
    assert claimed.pk == task.pk
    return claimed


def blocked_task(title: str = "Needs disk") -> Task:
    return engine.transition(make_task(title), TaskStatus.BLOCKED, reason="no disk left")


def repaired_execution(operator: Any) -> PlaybookExecution:
    blocked_task()
    execution = run_playbook("repair", user=operator)
    assert execution.can_roll_back
    return execution


# --- who may see and act -------------------------------------------------------------


@pytest.mark.parametrize("url", [INDEX, ENGINE])
def test_anonymous_visitors_are_sent_to_log_in(client: Any, url: str) -> None:
    response = client.get(url)

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


@pytest.mark.parametrize("url", [INDEX, ENGINE])
def test_an_outsider_is_forbidden(client: Any, outsider: Any, url: str) -> None:
    client.force_login(outsider)

    assert client.get(url).status_code == 403


@pytest.mark.parametrize("url", [INDEX, ENGINE])
@pytest.mark.parametrize("persona", ["observer", "operator", "owner"])
def test_every_tier_sees_both_pages(client: Any, request: Any, url: str, persona: str) -> None:
    client.force_login(request.getfixturevalue(persona))

    assert client.get(url).status_code == 200


def test_an_observer_sees_no_buttons_and_is_told_who_can_act(client: Any, observer: Any) -> None:
    client.force_login(observer)

    html = client.get(INDEX).content.decode()

    assert 'id="diagnose-button"' not in html
    assert "need the Operator tier" in html


@pytest.mark.parametrize(
    "url",
    [
        "/selfheal/diagnose/",
        "/selfheal/repair/",
        "/selfheal/autoheal/",
    ],
)
def test_an_observer_cannot_run_playbooks(client: Any, observer: Any, url: str) -> None:
    client.force_login(observer)

    assert client.post(url).status_code == 403
    assert not PlaybookExecution.objects.exists()


def test_an_observer_cannot_roll_back(client: Any, observer: Any, operator: Any) -> None:
    execution = repaired_execution(operator)
    client.force_login(observer)

    assert client.post(f"/selfheal/executions/{execution.pk}/rollback/").status_code == 403
    assert stored_execution(execution).status != PlaybookExecution.Status.ROLLED_BACK


@pytest.mark.parametrize("action", ["retry", "cancel"])
def test_an_observer_cannot_retry_or_cancel(client: Any, observer: Any, action: str) -> None:
    task = blocked_task()
    client.force_login(observer)

    assert client.post(f"/selfheal/tasks/{task.pk}/{action}/").status_code == 403
    assert stored(task).status == TaskStatus.BLOCKED


@pytest.mark.parametrize(
    "url", ["/selfheal/diagnose/", "/selfheal/tasks/1/retry/", "/selfheal/executions/1/rollback/"]
)
def test_an_outsider_cannot_act(client: Any, outsider: Any, url: str) -> None:
    client.force_login(outsider)

    assert client.post(url).status_code == 403


def test_anonymous_posts_are_sent_to_log_in(client: Any) -> None:
    response = client.post("/selfheal/diagnose/")

    assert response.status_code == 302
    assert not PlaybookExecution.objects.exists()


def test_diagnose_refuses_get(client: Any, operator: Any) -> None:
    client.force_login(operator)

    assert client.get("/selfheal/diagnose/").status_code == 405


# --- the Self-heal page ----------------------------------------------------------------


def stored_execution(execution: PlaybookExecution) -> PlaybookExecution:
    return PlaybookExecution.objects.get(pk=execution.pk)


def test_an_empty_page_says_to_press_diagnose(client: Any, operator: Any) -> None:
    client.force_login(operator)

    html = client.get(INDEX).content.decode()

    assert "No diagnosis yet" in html
    assert "Press <strong>Diagnose</strong>" in html
    assert "No playbook has run yet" in html


def test_an_operator_diagnoses_and_sees_the_report_colour_coded(client: Any, operator: Any) -> None:
    blocked_task()
    client.force_login(operator)

    response = client.post("/selfheal/diagnose/", follow=True)

    execution = PlaybookExecution.objects.get()
    assert execution.playbook == "diagnose"
    assert execution.started_by == operator
    html = response.content.decode()
    assert f"Diagnosis #{execution.pk}" in html  # the outcome message
    assert 'id="selfheal-report"' in html
    assert "sev-warning" in html  # a blocked task is a warning
    assert 'id="finding-task_queue"' in html
    assert f'id="execution-{execution.pk}"' in html


def test_findings_a_person_must_act_on_are_flagged(client: Any, operator: Any) -> None:
    # Pending work and no live worker: only a person can start one.
    make_task("Nobody takes me")
    client.force_login(operator)

    html = client.post("/selfheal/diagnose/", follow=True).content.decode()

    assert 'id="manual-actions"' in html
    assert "needs a person" in html
    assert "Start a worker" in html


def stored_report(*findings: dict[str, Any]) -> PlaybookExecution:
    return PlaybookExecution.objects.create(
        playbook="diagnose", status=PlaybookExecution.Status.SUCCEEDED, findings=list(findings)
    )


def manual_box(html: str) -> str:
    start = html.index('id="manual-actions"')
    return html[start : html.index("</div>", start)]


def test_the_needs_a_person_box_follows_the_findings_field_not_its_wording(
    client: Any, observer: Any
) -> None:
    # Worded the other way round on purpose: the box must not read the sentences.
    stored_report(
        {
            "check": "task_queue",
            "severity": "warning",
            "summary": "Marked manual.",
            "suggested_action": "Run repair when convenient.",
            "needs_person": True,
        },
        {
            "check": "worker_heartbeats",
            "severity": "critical",
            "summary": "Marked for a playbook.",
            "suggested_action": "Start a worker somewhere.",
            "needs_person": False,
        },
    )
    client.force_login(observer)

    box = manual_box(client.get(INDEX).content.decode())

    assert "Needs a person (1)" in box
    assert "Run repair when convenient." in box
    assert "Start a worker somewhere." not in box


def test_an_ok_finding_never_needs_a_person(client: Any, observer: Any) -> None:
    stored_report(
        {
            "check": "database",
            "severity": "ok",
            "summary": "Fine.",
            "suggested_action": "None needed.",
            "needs_person": True,
        }
    )
    client.force_login(observer)

    assert 'id="manual-actions"' not in client.get(INDEX).content.decode()


def test_a_dry_run_repair_changes_nothing_and_says_what_it_would_do(
    client: Any, operator: Any
) -> None:
    task = blocked_task()
    client.force_login(operator)

    html = client.post("/selfheal/repair/", {"dry_run": "1"}, follow=True).content.decode()

    execution = PlaybookExecution.objects.get()
    assert execution.dry_run
    assert stored(task).status == TaskStatus.BLOCKED
    assert "Would reset task" in html
    assert "rollback-button" not in html  # a dry run has nothing to undo


def test_a_repair_resets_the_task_and_offers_a_rollback(client: Any, operator: Any) -> None:
    task = blocked_task()
    client.force_login(operator)

    html = client.post("/selfheal/repair/", follow=True).content.decode()

    execution = PlaybookExecution.objects.get()
    assert not execution.dry_run
    assert stored(task).status == TaskStatus.PENDING
    assert f'action="/selfheal/executions/{execution.pk}/rollback/"' in html
    assert "hx-confirm" in html


def test_an_operator_rolls_back_a_repair(client: Any, operator: Any) -> None:
    execution = repaired_execution(operator)
    task = Task.objects.get()
    client.force_login(operator)

    response = client.post(f"/selfheal/executions/{execution.pk}/rollback/")

    assert response.status_code == 302
    assert stored_execution(execution).status == PlaybookExecution.Status.ROLLED_BACK
    assert stored(task).status == TaskStatus.BLOCKED
    assert any("rolled back" in m for m in messages_of(response))


def test_the_rollback_button_asks_before_it_posts(client: Any, operator: Any) -> None:
    execution = repaired_execution(operator)
    client.force_login(operator)

    html = client.get(INDEX).content.decode()

    url = f"/selfheal/executions/{execution.pk}/rollback/"
    form = html[html.index(f'action="{url}"') - 40 : html.index("rollback-button")]
    assert f'hx-post="{url}"' in form
    assert f'hx-confirm="Roll back execution #{execution.pk}? Every row it changed' in form
    # Without JavaScript the form goes to the confirmation page, never straight to a rollback.
    assert 'method="get"' in form


def test_without_javascript_rollback_shows_a_confirmation_and_changes_nothing(
    client: Any, operator: Any
) -> None:
    execution = repaired_execution(operator)
    task = Task.objects.get()
    client.force_login(operator)

    response = client.get(f"/selfheal/executions/{execution.pk}/rollback/")

    html = response.content.decode()
    assert response.status_code == 200
    assert f"Roll back execution #{execution.pk}?" in html
    assert f'method="post" action="/selfheal/executions/{execution.pk}/rollback/"' in html
    assert 'id="rollback-confirm-button"' in html
    assert 'name="csrfmiddlewaretoken"' in html
    assert stored_execution(execution).status != PlaybookExecution.Status.ROLLED_BACK
    assert stored(task).status == TaskStatus.PENDING


def test_the_confirmation_of_an_execution_with_nothing_to_undo_offers_no_button(
    client: Any, operator: Any
) -> None:
    execution = repaired_execution(operator)
    client.force_login(operator)
    client.post(f"/selfheal/executions/{execution.pk}/rollback/")  # rolled back already

    html = client.get(f"/selfheal/executions/{execution.pk}/rollback/").content.decode()

    assert 'id="rollback-unavailable"' in html
    assert "rollback-confirm-button" not in html


@pytest.mark.parametrize("method", ["get", "post"])
def test_an_observer_can_neither_ask_nor_roll_back(
    client: Any, operator: Any, observer: Any, method: str
) -> None:
    execution = repaired_execution(operator)
    client.force_login(observer)

    response = getattr(client, method)(f"/selfheal/executions/{execution.pk}/rollback/")

    assert response.status_code == 403
    assert stored_execution(execution).status != PlaybookExecution.Status.ROLLED_BACK


def test_asking_about_an_execution_that_does_not_exist_is_a_404(client: Any, operator: Any) -> None:
    client.force_login(operator)

    assert client.get("/selfheal/executions/999999/rollback/").status_code == 404


def test_a_refused_rollback_says_why_and_changes_nothing(client: Any, operator: Any) -> None:
    execution = repaired_execution(operator)
    task = Task.objects.get()
    engine.transition(task, TaskStatus.CANCELLED)  # changed since the repair
    client.force_login(operator)

    response = client.post(f"/selfheal/executions/{execution.pk}/rollback/")

    assert stored_execution(execution).status != PlaybookExecution.Status.ROLLED_BACK
    assert any("not rolled back" in m for m in messages_of(response))


def test_an_htmx_post_is_answered_with_a_redirect_header(client: Any, operator: Any) -> None:
    execution = repaired_execution(operator)
    client.force_login(operator)

    response = client.post(
        f"/selfheal/executions/{execution.pk}/rollback/", headers={"HX-Request": "true"}
    )

    assert response.status_code == 204
    assert response["HX-Redirect"] == INDEX


def test_auto_heal_evaluates_the_rules_now(client: Any, operator: Any) -> None:
    AutoHealRule.objects.create(name="queue", finding="task_queue", severity="warning")
    client.force_login(operator)

    response = client.post("/selfheal/autoheal/")

    assert response.status_code == 302
    said = messages_of(response)
    assert any("rule(s) evaluated" in m for m in said)
    assert "queue: task_queue is ok, below warning." in said


def test_auto_heal_without_rules_says_so(client: Any, owner: Any) -> None:
    AutoHealRule.objects.update(enabled=False)
    client.force_login(owner)

    response = client.post("/selfheal/autoheal/")

    assert any("No enabled auto-heal rules" in m for m in messages_of(response))


def test_report_text_is_escaped(client: Any, observer: Any) -> None:
    PlaybookExecution.objects.create(
        playbook="diagnose",
        status=PlaybookExecution.Status.SUCCEEDED,
        summary="<script>alert(1)</script>",
        findings=[
            {
                "check": "task_queue",
                "severity": "critical",
                "summary": "<img src=x onerror=alert(1)>",
                "evidence": {},
                "suggested_action": "Do <b>this</b>.",
            }
        ],
    )
    client.force_login(observer)

    html = client.get(INDEX).content.decode()

    assert "<script>alert(1)</script>" not in html
    assert "&lt;img src=x" in html
    assert "sev-critical" in html


def test_the_index_page_reads_a_fixed_number_of_queries(client: Any, operator: Any) -> None:
    client.force_login(operator)
    for _ in range(3):
        run_playbook("diagnose", user=operator)
    client.get(INDEX)
    with CaptureQueriesContext(connection) as few:
        assert client.get(INDEX).status_code == 200
    for _ in range(25):
        run_playbook("diagnose", user=operator)
    with CaptureQueriesContext(connection) as many:
        assert client.get(INDEX).status_code == 200

    assert len(many) == len(few)


# --- the Engine page -------------------------------------------------------------------


def test_an_empty_engine_says_how_to_start_a_worker(client: Any, observer: Any) -> None:
    client.force_login(observer)

    html = client.get(ENGINE).content.decode()

    assert "No worker is registered" in html
    assert "run_worker --capabilities" in html
    assert "Nothing is stuck or waiting" in html
    assert 'id="queue-count-pending">0<' in html


def test_the_engine_shows_counts_workers_and_stuck_or_waiting_tasks(
    client: Any, observer: Any
) -> None:
    stuck = running_task("Lost its worker")
    make_task("Waiting in line")
    expire_lease(stuck, seconds_ago=30)
    blocked = blocked_task("No disk")
    client.force_login(observer)

    html = client.get(ENGINE).content.decode()

    assert 'id="queue-count-pending">1<' in html
    assert 'id="queue-count-running">1<' in html
    assert 'id="queue-count-blocked">1<' in html
    assert f'id="task-{stuck.pk}"' in html
    assert "stuck" in html
    assert f'id="task-{blocked.pk}"' in html
    assert "no disk left" in html
    assert "s ago" in html  # the worker's heartbeat age
    assert "retry-button" not in html  # an Observer only sees


def test_an_operator_retries_a_stuck_task(client: Any, operator: Any) -> None:
    stuck = running_task()
    expire_lease(stuck)
    client.force_login(operator)

    response = client.post(f"/selfheal/tasks/{stuck.pk}/retry/")

    assert response.status_code == 302
    assert response["Location"] == ENGINE
    task = stored(stuck)
    assert task.status == TaskStatus.PENDING
    assert task.lease_worker is None


def test_an_operator_cancels_a_blocked_task(client: Any, operator: Any) -> None:
    task = blocked_task()
    client.force_login(operator)

    client.post(f"/selfheal/tasks/{task.pk}/cancel/")

    assert stored(task).status == TaskStatus.CANCELLED


def test_an_invalid_move_is_refused_with_the_reason(client: Any, operator: Any) -> None:
    task = engine.transition(make_task(), TaskStatus.CANCELLED)
    client.force_login(operator)

    response = client.post(f"/selfheal/tasks/{task.pk}/retry/")

    assert stored(task).status == TaskStatus.CANCELLED
    assert any("cannot become pending" in m for m in messages_of(response))


def test_the_engine_page_reads_a_fixed_number_of_queries(client: Any, operator: Any) -> None:
    def grow(n: int) -> None:
        for i in range(n):
            worker, _ = make_worker(f"grow-{Task.objects.count()}-{i}")
            make_task(f"t{i}")
            claimed = engine.claim(worker)
            assert claimed is not None
            expire_lease(claimed)
            blocked_task(f"b{i}")

    client.force_login(operator)
    grow(2)
    client.get(ENGINE)
    with CaptureQueriesContext(connection) as few:
        assert client.get(ENGINE).status_code == 200
    grow(12)
    with CaptureQueriesContext(connection) as many:
        assert client.get(ENGINE).status_code == 200

    assert len(many) == len(few)


def test_the_workers_fragment_refreshes_alone(client: Any, observer: Any) -> None:
    make_worker("alpha")
    client.force_login(observer)

    html = client.get(ENGINE, {"fragment": "workers"}).content.decode()

    assert html.lstrip().startswith('<section id="engine-workers"')
    assert "alpha" in html
