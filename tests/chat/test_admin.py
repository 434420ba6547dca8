"""Chat in the operator panel: Owners change a mode's run budget (audited), nobody
changes history (sessions, runs, tool executions, stream events), the stop reason's
and the session page's budget links lead there, and the run list's query count stays
flat as runs grow."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from chat.events import emit
from chat.models import ChatSession, Run, RunBudget, StreamEvent, ToolExecution
from chat.rendering import next_action
from controlplane.models import AuditEvent
from tests.chat.runs import make_run

pytestmark = pytest.mark.django_db


def budget_form(budget: RunBudget, **changes: Any) -> dict[str, Any]:
    fields = ["mode", "max_steps", "max_wall_clock_seconds", "max_cost"]
    form = {name: getattr(budget, name) for name in fields}
    form["max_retries_per_fingerprint"] = budget.max_retries_per_fingerprint
    return {**form, **changes, "_save": "Save"}


def change_url(budget: RunBudget) -> str:
    return reverse("admin:chat_runbudget_change", args=[budget.pk])


def test_an_owner_changes_a_modes_run_budget_and_the_change_is_audited(
    client: Client, owner: Any
) -> None:
    budget = RunBudget.objects.get(mode="code")
    client.force_login(owner)

    response = client.post(change_url(budget), budget_form(budget, max_steps=25))

    assert response.status_code == 302
    budget.refresh_from_db()
    assert budget.max_steps == 25
    event = AuditEvent.objects.filter(action="runbudget.changed").get()
    assert (event.actor, event.before, event.after) == (owner, {"max_steps": 20}, {"max_steps": 25})


@pytest.mark.parametrize("persona", ["operator", "observer"])
def test_operators_and_observers_see_run_budgets_but_cannot_change_them(
    client: Client, persona: str, request: pytest.FixtureRequest
) -> None:
    budget = RunBudget.objects.get(mode="code")
    client.force_login(request.getfixturevalue(persona))

    assert client.get(change_url(budget)).status_code == 200
    response = client.post(change_url(budget), budget_form(budget, max_steps=99))

    assert response.status_code == 403
    assert RunBudget.objects.get(pk=budget.pk).max_steps == budget.max_steps
    assert not AuditEvent.objects.filter(action="runbudget.changed").exists()


def test_runs_and_their_history_are_read_only_for_everyone(
    client: Client, superuser: Any, operator: Any
) -> None:
    run = make_run(operator)
    execution = ToolExecution.objects.create(run=run, step=1, tool="next_page")
    event = emit(run.pk, StreamEvent.Type.STATUS, {"status": "idle", "detail": "Queued."})
    client.force_login(superuser)

    for obj in (run.session, run, execution, event):
        opts = obj._meta
        name = f"admin:{opts.app_label}_{opts.model_name}"
        assert client.get(reverse(f"{name}_change", args=[obj.pk])).status_code == 200
        assert client.get(reverse(f"{name}_add")).status_code == 403
        assert client.post(reverse(f"{name}_change", args=[obj.pk]), {}).status_code == 403
        assert (
            client.post(reverse(f"{name}_delete", args=[obj.pk]), {"post": "yes"}).status_code
            == 403
        )
    assert Run.objects.filter(pk=run.pk).exists()
    assert StreamEvent.objects.filter(pk=event.pk).exists()


def test_chat_is_in_the_admins_control_and_observability_sections(
    client: Client, observer: Any
) -> None:
    client.force_login(observer)

    app_list = client.get("/admin/").context["app_list"]

    sections = {app["name"]: [m["name"] for m in app["models"]] for app in app_list}
    assert "Run budgets" in sections["Control"]
    for name in ("Chat sessions", "Runs", "Tool executions", "Stream events"):
        assert name in sections["Observability"]


def test_the_raise_budget_link_leads_to_the_modes_own_run_budget(
    client: Client, owner: Any
) -> None:
    action = {"kind": "raise_budget", "budget": "max_steps", "value": "20", "mode": "code"}
    href = next_action(action, run_id=1)["admin_href"]
    client.force_login(owner)

    response = client.get(href)

    assert response.status_code == 302
    assert response["Location"] == change_url(RunBudget.objects.get(mode="code"))


def test_the_raise_budget_link_of_a_mode_without_a_budget_offers_to_add_it(
    client: Client, owner: Any
) -> None:
    RunBudget.objects.filter(mode="ops").delete()
    action = {"kind": "raise_budget", "budget": "max_steps", "value": "20", "mode": "ops"}
    client.force_login(owner)

    response = client.get(next_action(action, run_id=1)["admin_href"])

    assert response["Location"] == f"{reverse('admin:chat_runbudget_add')}?mode=ops"
    assert client.get(response["Location"]).context["adminform"].form.initial["mode"] == "ops"


def test_the_session_pages_budget_link_leads_to_the_run_budgets(client: Client, owner: Any) -> None:
    chat = ChatSession.objects.create(user=owner, title="Budgets")
    client.force_login(owner)

    content = client.get(reverse("chat:session", args=[chat.pk])).content.decode()

    assert f'href="{reverse("admin:chat_runbudget_changelist")}"' in content
    assert f'href="{reverse("admin:index")}">Change budgets' not in content


def test_the_run_list_costs_the_same_queries_for_two_runs_or_twenty(
    client: Client, observer: Any, operator: Any
) -> None:
    client.force_login(observer)
    url = reverse("admin:chat_run_changelist")
    for _ in range(2):
        make_run(operator)
    client.get(url)  # warm the caches (content types, permissions)

    with CaptureQueriesContext(connection) as few:
        assert client.get(url).status_code == 200
    for _ in range(18):
        make_run(operator)
    with CaptureQueriesContext(connection) as many:
        assert client.get(url).status_code == 200

    assert len(many) == len(few) <= 12
    assert Decimal(Run.objects.count()) == 20
