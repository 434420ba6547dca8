"""The operator panel shows money and times as the product does: every money field of
every model through the one formatter, with its unit, never a raw decimal; times short;
the product's dark theme on every admin page; the audit filtered by the product's own
object types; and a new account in the audit trail."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.test import RequestFactory
from django.urls import reverse

from controlplane.admin_history import AuditedObjectTypeFilter
from controlplane.approvals import request_approval
from controlplane.audit import record
from controlplane.models import Approval, AuditEvent, FeatureToggle
from controlplane.money import MoneyField
from routing.models import AIModel, Budget, BudgetDay, OperationLog, Provider

# A decimal as the admin's stock display writes it (`0.000000800000000000`, no unit),
# in a page's text: formatted money always starts with its unit.
RAW_DECIMAL = re.compile(r"(?<![$\d.,])\d+\.\d{3,}")


def shown_text(html: str) -> str:
    """What a person reads: the tags (and the exact values in their titles) left out."""
    return re.sub(r"<[^>]*>", " ", html)


def changelist(client: Any, model: type, **query: str) -> str:
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    response = client.get(url, query)
    assert response.status_code == 200
    html = response.content.decode()
    return html[html.index('id="result_list"') : html.index("</table>", html.index("result_list"))]


@pytest.fixture
def priced(db: Any) -> dict[str, Any]:
    provider = Provider.objects.create(name="acme", kind=Provider.Kind.COMPATIBLE)
    model = AIModel.objects.create(
        provider=provider,
        model_id="acme/tiny",
        price_prompt=Decimal("0.000000800000000000"),
        price_completion=Decimal("0.0000024"),
        price_image=Decimal("0.001"),
    )
    budget = Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal("1234.5"))
    BudgetDay.objects.create(
        budget=budget,
        day=dt.date(2026, 12, 3),
        limit=Decimal("1234.5"),
        spent=Decimal("0.25"),
        reserved=Decimal("0.000000075"),
    )
    log = OperationLog.objects.create(
        request_id="r1", operation="summarize", kind="chat", cost=Decimal("0.0000008")
    )
    return {"model": model, "budget": budget, "log": log}


@pytest.mark.django_db
def test_the_cost_log_shows_amounts_and_times_as_the_product_does(client, observer, priced):
    client.force_login(observer)

    rows = changelist(client, OperationLog)

    assert '<span class="money" title="$0.0000008">$0.0000008</span>' in rows
    at = priced["log"].at
    assert f'<time datetime="{at.isoformat()}"' in rows
    assert not RAW_DECIMAL.search(shown_text(rows))


@pytest.mark.django_db
def test_the_catalog_lists_token_prices_per_million_tokens(client, observer, priced):
    client.force_login(observer)

    rows = changelist(client, AIModel)

    assert "Price prompt /1M tokens" in rows
    assert '<span class="money" title="$0.0000008 per token">$0.80</span>' in rows
    assert '<span class="money" title="$0.0000024 per token">$2.40</span>' in rows
    assert "image $0.001/image" in rows
    assert not RAW_DECIMAL.search(shown_text(rows))


@pytest.mark.django_db
def test_budgets_and_their_days_show_formatted_amounts(client, observer, priced):
    client.force_login(observer)

    budgets = changelist(client, Budget)
    days = changelist(client, BudgetDay)

    assert "$1,234.50" in budgets
    assert "$1,234.50" in days
    assert "$0.25" in days
    assert "$0.000000075" in days
    assert not RAW_DECIMAL.search(shown_text(budgets + days))


@pytest.mark.django_db
def test_approvals_list_their_amount_with_the_exact_one_on_hover(client, operator, observer):
    request_approval(
        action="model.call", requested_by=operator, reason="a costly call", amount=Decimal("0.5")
    )
    client.force_login(observer)

    rows = changelist(client, Approval)

    assert '<span class="money" title="$0.5">$0.50</span>' in rows


@pytest.mark.django_db
def test_a_money_column_still_sorts_by_its_amount(client, observer, priced):
    client.force_login(observer)
    Budget.objects.create(scope=Budget.Scope.OPERATION, operation="chat", daily_limit=Decimal("2"))

    rows = changelist(client, Budget, o="3")  # the third column: daily limit, ascending

    assert rows.index("$2.00") < rows.index("$1,234.50")


@pytest.mark.django_db
def test_a_read_only_page_shows_money_with_its_unit_and_no_raw_decimal(client, observer, priced):
    client.force_login(observer)
    url = reverse("admin:routing_aimodel_change", args=[priced["model"].pk])

    html = client.get(url).content.decode()

    assert "Price prompt /1M tokens" in html
    assert "$0.80" in html
    assert "0.000000800000000000" not in html
    assert not RAW_DECIMAL.search(shown_text(html[html.index('id="content-main"') :]))


@pytest.mark.django_db
def test_an_editable_page_keeps_its_money_inputs(client, owner, priced):
    client.force_login(owner)
    url = reverse("admin:routing_budget_change", args=[priced["budget"].pk])

    response = client.get(url)

    html = response.content.decode()
    assert 'name="daily_limit" value="1234.50"' in html  # not 1234.500000000000000000


@pytest.mark.django_db
def test_saving_an_amount_as_shown_changes_nothing(client, owner, priced):
    client.force_login(owner)
    budget = priced["budget"]
    url = reverse("admin:routing_budget_change", args=[budget.pk])

    response = client.post(
        url, {"scope": budget.scope, "daily_limit": "1234.50", "enabled": "on", "_save": "Save"}
    )

    assert response.status_code == 302
    budget.refresh_from_db()
    assert budget.daily_limit == Decimal("1234.5")
    assert not AuditEvent.objects.filter(action="budget.changed").exists()


@pytest.mark.django_db
def test_no_admin_list_shows_a_money_field_raw(owner):
    """Every money field in every registered list goes through the one formatter,
    whichever app registered it (the site gives each ModelAdmin the formatting)."""
    request = RequestFactory().get("/admin/")
    request.user = owner
    raw = [
        f"{model._meta.label}.{name}"
        for model, model_admin in admin.site._registry.items()
        for name in model_admin.get_list_display(request)
        if isinstance(name, str)
        and any(f.name == name and isinstance(f, MoneyField) for f in model._meta.fields)
    ]

    assert raw == []


@pytest.mark.django_db
def test_every_admin_page_is_in_the_products_dark_theme(client, observer):
    client.force_login(observer)

    for url in ["/admin/", reverse("admin:routing_operationlog_changelist")]:
        html = client.get(url).content.decode()
        assert 'href="/static/css/admin.css"' in html
        assert "admin/css/dark_mode.css" not in html  # no stock theme to flip to light

    stylesheet = b"".join(client.get("/static/css/admin.css").streaming_content)
    assert b'@import url("theme.css")' in stylesheet
    assert b"--body-bg: var(--bg)" in stylesheet
    theme = b"".join(client.get("/static/css/theme.css").streaming_content)
    assert b"--bg: #0f1216" in theme


def object_type_choices(client: Any, **query: str) -> tuple[Any, dict[str, str]]:
    response = client.get(reverse("admin:controlplane_auditevent_changelist"), query)
    [spec] = [
        spec
        for spec in response.context["cl"].filter_specs
        if isinstance(spec, AuditedObjectTypeFilter)
    ]
    return response, {label: value for value, label in spec.lookup_choices}


@pytest.mark.django_db
def test_the_audit_is_filtered_by_the_products_own_object_types(client, observer):
    client.force_login(observer)

    _, choices = object_type_choices(client)

    assert {"Feature toggles", "Routes", "Budgets", "Users", "Groups"} <= choices.keys()
    assert not {"Sessions", "Permissions", "Content types", "Log entries"} & choices.keys()
    assert list(choices) == sorted(choices, key=str.lower)


@pytest.mark.django_db
def test_choosing_an_object_type_lists_its_events_only(client, observer):
    toggle = FeatureToggle.objects.create(key="demo.flag", description="A flag")
    record("test.elsewhere", after={"n": 1})
    client.force_login(observer)
    toggle_type = ContentType.objects.get_for_model(FeatureToggle)

    response, _ = object_type_choices(client, object_type=str(toggle_type.pk))

    events = list(response.context["cl"].result_list)
    assert events
    assert all(event.content_type_id == toggle_type.pk for event in events)
    assert str(toggle.pk) in {event.object_id for event in events}


@pytest.mark.django_db
def test_an_unknown_object_type_is_refused_not_a_500(client, observer):
    client.force_login(observer)
    sessions = ContentType.objects.get(app_label="sessions", model="session")

    for value in ["abc", str(sessions.pk)]:
        response = client.get(
            reverse("admin:controlplane_auditevent_changelist"), {"object_type": value}
        )
        assert response.status_code == 302
        assert response["Location"].endswith("?e=1")


@pytest.mark.django_db
def test_creating_an_account_in_the_admin_is_audited_with_who_made_whom(client, owner):
    client.force_login(owner)

    response = client.post(
        "/admin/auth/user/add/",
        {
            "username": "newcomer",
            "usable_password": "true",
            "password1": "a-long-Passphrase-42",
            "password2": "a-long-Passphrase-42",
        },
    )

    assert response.status_code == 302
    event = AuditEvent.objects.get(action="user.created", object_repr="newcomer")
    assert event.actor == owner
    assert event.after == {
        "username": "newcomer",
        "is_active": True,
        "is_superuser": False,
        "is_staff": False,
    }
    assert event.client_address == "127.0.0.1"


@pytest.mark.django_db
def test_an_account_made_outside_a_request_is_audited_as_the_systems():
    made = User.objects.create_user("night-shift", password="a-long-Passphrase-42")

    event = AuditEvent.objects.get(action="user.created", object_id=str(made.pk))
    assert event.actor is None
    assert event.actor_label == "system"
