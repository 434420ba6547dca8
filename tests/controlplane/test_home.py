"""Home, the cockpit: each card's content and empty state, who may see it, and a
number of queries that does not grow with the rows behind the cards."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from unittest import mock

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from chat import home_cards
from chat.home_cards import ACTIVE_LIMIT
from chat.kill_switches import RUNS_TOGGLE
from chat.models import ChatSession, Run, RunStatus, StopReason
from controlplane import audit
from controlplane.approvals import request_approval
from controlplane.home import cards
from controlplane.models import FeatureToggle
from controlplane.templatetags.money import usd
from healthmon.levels import Level
from healthmon.models import CodeReport, Fingerprint, FingerprintStatus
from routing.budgets import budget_day
from routing.models import Budget, BudgetDay, OperationLog
from selfheal import engine
from selfheal.models import PlaybookExecution, TaskStatus
from tests.selfheal import make_task, make_worker

pytestmark = pytest.mark.django_db


def card(html: str, card_id: str) -> str:
    """One card's section of the page."""
    start = html.index(f'<section id="{card_id}"')
    return html[start : html.index("</section>", start)]


def home(client: Any, user: Any) -> str:
    client.force_login(user)
    response = client.get("/")
    assert response.status_code == 200
    return response.content.decode()


def a_run(user: Any, status: str = RunStatus.STREAMING, **fields: Any) -> Run:
    chat = ChatSession.objects.create(user=user, title="Quarterly numbers")
    return Run.objects.create(
        session=chat,
        started_by=user,
        mode="normal",
        status=status,
        max_steps=10,
        max_wall_clock_seconds=300,
        max_cost=Decimal("0.50"),
        **fields,
    )


def a_budget(scope: str, limit: str, spent: str, **target: Any) -> Budget:
    budget = Budget.objects.create(scope=scope, daily_limit=Decimal(limit), **target)
    BudgetDay.objects.create(
        budget=budget, day=budget_day(), limit=Decimal(limit), spent=Decimal(spent)
    )
    return budget


def a_call(
    status: str = OperationLog.Status.OK, at: datetime | None = None, **fields: Any
) -> OperationLog:
    """One call in the log, written at `at` (the log stamps its own time on insert)."""
    with mock.patch.object(timezone, "now", return_value=at or timezone.now()):
        return OperationLog.objects.create(
            request_id=uuid.uuid4().hex,
            operation=fields.pop("operation", "chat"),
            cost=Decimal(fields.pop("cost", "0.01")),
            status=status,
            **fields,
        )


def a_diagnosis(*severities: str) -> PlaybookExecution:
    return PlaybookExecution.objects.create(
        playbook="diagnose",
        status=PlaybookExecution.Status.SUCCEEDED,
        summary="Six checks.",
        findings=[
            {"check": "task_queue", "severity": severity, "summary": f"The queue is {severity}."}
            for severity in severities
        ],
    )


def a_fingerprint(key: str, level: int = Level.ERROR, **fields: Any) -> Fingerprint:
    now = timezone.now()
    return Fingerprint.objects.create(
        service=fields.pop("service", "api"),
        key=key,
        template=fields.pop("template", f"Timeout talking to <db> ({key})"),
        level=level,
        count=3,
        first_seen=fields.pop("first_seen", now),
        last_seen=now,
        **fields,
    )


# --- who may see it ------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_log_in(client: Any) -> None:
    response = client.get("/")

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_an_outsider_is_forbidden(client: Any, outsider: Any) -> None:
    client.force_login(outsider)

    assert client.get("/").status_code == 403


@pytest.mark.parametrize("persona", ["observer", "operator", "owner"])
def test_every_staff_tier_sees_every_card(request: Any, client: Any, persona: str) -> None:
    html = home(client, request.getfixturevalue(persona))

    for card_id in (
        "system-health",
        "home-runs",
        "pending-approvals",
        "home-spend",
        "home-engine",
        "home-errors",
        "home-code-health",
        "toggles-off",
        "recent-audit",
    ):
        assert f'<section id="{card_id}"' in html
    assert 'ws-connect="/ws/home/"' in html


def test_a_card_that_cannot_be_read_leaves_the_rest_of_home_standing(
    client: Any, observer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(user: Any) -> dict[str, Any]:
        raise RuntimeError("the database of this card is away")

    monkeypatch.setattr(cards, "_cards", dict(cards._cards))
    cards.register_home_card("broken", "controlplane/partials/home/changes.html", broken)

    html = home(client, observer)

    assert "This card could not be read just now" in html
    assert '<section id="home-runs"' in html
    assert '<section id="system-health"' in html


# --- empty states ----------------------------------------------------------------------


def test_a_new_system_says_on_each_card_what_is_missing_and_where_to_start(
    client: Any, observer: Any
) -> None:
    html = home(client, observer)

    assert "No agent is running." in card(html, "home-runs")
    assert "No run has stopped yet." in card(html, "home-runs")
    assert "No budgets yet" in card(html, "home-spend")
    assert "No gateway calls in the last hour." in card(html, "home-spend")
    assert "No task is stuck or waiting." in card(html, "home-engine")
    assert "No worker has registered" in card(html, "home-engine")
    assert "No diagnosis yet." in card(html, "home-engine")
    assert "No open error fingerprints." in card(html, "home-errors")
    assert "No code-health report yet" in card(html, "home-code-health")
    assert "No scan yet." in card(html, "home-code-health")
    assert "Nothing waits for a decision." in card(html, "pending-approvals")
    assert "No diagnosis yet, so only the probes below are judged." in card(html, "system-health")


# --- runs ----------------------------------------------------------------------------------


def test_active_runs_show_status_step_and_cost_and_link_to_their_run(
    client: Any, observer: Any, operator: Any
) -> None:
    run = a_run(
        operator, RunStatus.STREAMING, steps=3, cost=Decimal("0.12"), status_detail="Replying"
    )

    runs = card(home(client, observer), "home-runs")

    row = runs[runs.index(f'id="home-run-{run.pk}"') :]
    assert f'href="/chat/{run.session_id}/"' in row
    assert "Streaming" in row
    assert "Replying" in row
    assert "3 of 10" in row
    assert f"{usd(Decimal('0.12'))} of {usd(Decimal('0.50'))}" in row
    assert 'id="active-run-count">1<' in runs


def test_more_active_runs_than_shown_are_counted_in_all(
    client: Any, observer: Any, operator: Any
) -> None:
    for _ in range(ACTIVE_LIMIT + 2):
        a_run(operator, RunStatus.THINKING)

    runs = card(home(client, observer), "home-runs")

    assert f'id="active-run-count">{ACTIVE_LIMIT + 2}<' in runs
    assert runs.count('class="run status-thinking"') == ACTIVE_LIMIT
    assert f"{ACTIVE_LIMIT + 2} in all; the newest are shown." in runs


def test_a_run_that_stops_while_the_card_is_read_is_shown_once(
    observer: Any, operator: Any, monkeypatch: Any
) -> None:
    """The stop commits between the card's two reads: the card shows the run as the
    first read saw it, not in both lists (a row id twice on the page)."""
    run = a_run(operator, RunStatus.STOPPING)
    first_read = home_cards.active_runs()
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.STOPPED, stop_reason=StopReason.STOPPED_BY_USER, finished_at=timezone.now()
    )
    monkeypatch.setattr(home_cards, "active_runs", lambda: first_read)

    context = home_cards.runs_context()

    assert [r.pk for r in context["active_runs"]] == [run.pk]
    assert context["active_run_count"] == 1
    assert context["stopped_runs"] == []


def test_stopped_runs_say_why_they_stopped_newest_first(
    client: Any, observer: Any, operator: Any
) -> None:
    now = timezone.now()
    older = a_run(
        operator,
        RunStatus.STOPPED,
        stop_reason=StopReason.COMPLETED,
        finished_at=now - timedelta(minutes=5),
    )
    newer = a_run(
        operator,
        RunStatus.STOPPED,
        stop_reason=StopReason.COST_BUDGET,
        finished_at=now,
        status_detail="Spent $0.50 of $0.50",
    )

    runs = card(home(client, observer), "home-runs")

    assert "No agent is running." in runs
    assert runs.index(f"home-run-{newer.pk}") < runs.index(f"home-run-{older.pk}")
    assert "Cost budget used up" in runs
    assert "Spent $0.50 of $0.50" in runs
    assert "Completed" in runs


def test_when_runs_are_switched_off_the_runs_card_says_so_instead_of_just_idle(
    client: Any, observer: Any
) -> None:
    FeatureToggle.objects.update_or_create(key=RUNS_TOGGLE, defaults={"enabled": False})

    runs = card(home(client, observer), "home-runs")

    assert 'id="runs-switched-off"' in runs
    assert f"<code>{RUNS_TOGGLE}</code></a> is off" in runs


# --- spend ---------------------------------------------------------------------------------


def test_each_budget_is_coloured_at_the_notice_thresholds_fullest_first(
    client: Any, observer: Any, operator: Any
) -> None:
    under = a_budget(Budget.Scope.OPERATION, "10", "3", operation="embed")
    half = a_budget(Budget.Scope.OPERATION, "10", "5.5", operation="chat")
    most = a_budget(Budget.Scope.SERVICE, "10", "8", service="billing")
    spent = a_budget(Budget.Scope.USER, "10", "10", user=operator)

    spend = card(home(client, observer), "home-spend")

    assert f'id="budget-{under.pk}" class="budget spend-0"' in spend
    assert f'id="budget-{half.pk}" class="budget spend-50"' in spend
    assert f'id="budget-{most.pk}" class="budget spend-80"' in spend
    assert f'id="budget-{spent.pk}" class="budget spend-100"' in spend
    assert spend.count("limit reached") == 1
    order = [spend.index(f'id="budget-{b.pk}"') for b in (spent, most, half, under)]
    assert order == sorted(order)
    assert f"{usd(Decimal('5.5'))} of {usd(Decimal(10))}" in spend


def test_the_last_hours_calls_are_counted_by_outcome_with_the_newest_refusals(
    client: Any, observer: Any
) -> None:
    a_call(cost="0.25")
    a_call(cost="0.25")
    a_call(OperationLog.Status.ERROR, cost="0")
    a_call(OperationLog.Status.REFUSED, cost="0", error="budget_exceeded: over <the> limit")
    a_call(cost="9", at=timezone.now() - timedelta(hours=2))

    spend = card(home(client, observer), "home-spend")

    assert f"4 calls, {usd(Decimal('0.50'))}" in spend
    assert 'id="calls-ok">2 ok<' in spend
    assert 'id="calls-error">1 error<' in spend
    assert 'id="calls-refused">1 refused<' in spend
    assert "budget_exceeded: over &lt;the&gt; limit" in spend


# --- engine and system health ---------------------------------------------------------------


def test_the_engine_card_shows_the_queue_workers_and_what_is_stuck_or_waiting(
    client: Any, observer: Any
) -> None:
    make_worker("worker-1")
    make_worker("worker-2", online=False)
    make_task("Rotate the keys")
    blocked = engine.transition(
        make_task("Reindex"), TaskStatus.BLOCKED, reason="Waiting for the <search> cluster"
    )

    engine_card = card(home(client, observer), "home-engine")

    assert 'id="queue-pending" title="Pending">1 pending<' in engine_card
    assert 'id="queue-blocked" title="Blocked">1 blocked<' in engine_card
    assert "1 of 2 workers online." in engine_card
    assert f'id="home-task-{blocked.pk}"' in engine_card
    assert "Waiting for the &lt;search&gt; cluster" in engine_card
    assert 'id="attention-count">1<' in engine_card
    assert "Oldest pending:" in engine_card
    assert "Rotate the keys" in engine_card


def test_system_health_is_never_green_while_the_diagnosis_says_critical(
    client: Any, observer: Any
) -> None:
    a_diagnosis("ok", "critical", "warning")

    html = home(client, observer)

    health = card(html, "system-health")
    assert 'id="system-health-severity">critical<' in health
    assert "Needs attention now." in health
    assert "The queue is critical." in health
    assert "critical" in card(html, "home-engine")


def test_system_health_is_ok_when_the_probes_are_up_and_the_diagnosis_is_clean(
    client: Any, observer: Any
) -> None:
    a_diagnosis("ok", "ok")

    health = card(home(client, observer), "system-health")

    assert 'id="system-health-severity">ok<' in health
    assert "Everything checked is working." in health


def test_a_warning_diagnosis_makes_system_health_a_warning(client: Any, observer: Any) -> None:
    a_diagnosis("ok", "warning")

    health = card(home(client, observer), "system-health")

    assert 'id="system-health-severity">warning<' in health


# --- errors and code health ------------------------------------------------------------------


def test_open_error_fingerprints_are_counted_and_the_newest_listed(
    client: Any, observer: Any
) -> None:
    now = timezone.now()
    old = a_fingerprint("old", first_seen=now - timedelta(days=2))
    new = a_fingerprint("new", template="Payment <gateway> refused", first_seen=now)
    a_fingerprint("regressed", status=FingerprintStatus.REGRESSED)
    resolved = a_fingerprint("resolved", status=FingerprintStatus.RESOLVED)
    noise = a_fingerprint("noise", level=Level.INFO)

    errors = card(home(client, observer), "home-errors")

    assert 'id="open-errors">3<' in errors
    assert "1 regressed" in errors
    assert errors.index(f"home-fingerprint-{new.pk}") < errors.index(f"home-fingerprint-{old.pk}")
    assert f'href="/health/fingerprints/{new.pk}/"' in errors
    assert "Payment &lt;gateway&gt; refused" in errors
    assert f"home-fingerprint-{resolved.pk}" not in errors
    assert f"home-fingerprint-{noise.pk}" not in errors


def test_the_latest_code_health_report_is_linked(client: Any, observer: Any) -> None:
    now = timezone.now()
    report = CodeReport.objects.create(
        trigger=CodeReport.Trigger.ON_DEMAND,
        period_start=now - timedelta(days=7),
        period_end=now,
        subject="Code health, last 7 days: 3 new, 1 fixed",
        text="...",
    )

    code = card(home(client, observer), "home-code-health")

    assert f'href="/health/code/reports/{report.pk}/"' in code
    assert "Code health, last 7 days: 3 new, 1 fixed" in code


# --- approvals and changes ---------------------------------------------------------------------


def test_recent_changes_link_each_row_to_its_object(
    client: Any, observer: Any, operator: Any
) -> None:
    toggle = FeatureToggle.objects.create(key="reports.weekly", enabled=True)
    run = a_run(operator)
    approval = request_approval(action="selfheal.repair", requested_by=operator, reason="Fix")
    audit.record("toggle.changed", toggle, actor=operator)
    audit.record("run.stop_requested", run, actor=operator, target_repr=f"Run #{run.pk}")
    audit.record("selfheal.note", None, actor=operator)

    changes = card(home(client, observer), "recent-audit")

    assert 'href="/toggles/?toggle=reports.weekly#toggle-reports.weekly"' in changes
    assert f'href="/chat/{run.session_id}/#run-{run.pk}"' in changes or (
        f'href="/chat/{run.session_id}/"' in changes
    )
    assert f'href="/approvals/#decision-{approval.pk}"' in changes


def test_a_pending_approval_shows_on_home(client: Any, owner: Any, operator: Any) -> None:
    request_approval(action="selfheal.repair", requested_by=operator, reason="Restart it")

    approvals = card(home(client, owner), "pending-approvals")

    assert "Restart it" in approvals
    assert 'id="pending-count">1<' in approvals


# --- queries -----------------------------------------------------------------------------------


def fill(operator: Any, rows: int, start: int = 0) -> None:
    """`rows` of everything each card lists."""
    for index in range(start, start + rows):
        a_run(operator, RunStatus.STREAMING)
        a_run(operator, RunStatus.STOPPED, stop_reason=StopReason.COMPLETED)
        a_call(OperationLog.Status.REFUSED, error="budget_exceeded")
        engine.transition(make_task(f"Task {index}"), TaskStatus.BLOCKED, reason="Waiting")
        make_task(f"Pending {index}")
        a_fingerprint(f"k{index}")
        FeatureToggle.objects.create(key=f"feature.{index}", enabled=False)
        request_approval(action="selfheal.repair", requested_by=operator, reason=f"R{index}")
        make_worker(f"worker-{index}")
    a_diagnosis("critical")


def home_queries(client: Any) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/").status_code == 200
    return len(queries)


def test_homes_queries_do_not_grow_with_the_rows_behind_its_cards(
    client: Any, owner: Any, operator: Any
) -> None:
    client.force_login(owner)
    fill(operator, 1)
    home_queries(client)  # the toggles' cache filled, as every later request finds it
    few = home_queries(client)
    fill(operator, 12, start=1)
    many = home_queries(client)

    assert many == few
    # About thirty today (the session, the user and their permissions, then each
    # card's fixed few); the bound leaves room for a card more.
    assert many <= 35
