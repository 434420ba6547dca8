"""The routing app in the operator panel: who may change routes, budgets, policies,
providers and service keys; secrets that are never shown; a cost log nobody can
rewrite; and every configuration change in the audit trail with before and after."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import pytest
from django import forms
from django.contrib.contenttypes.models import ContentType
from django.contrib.messages import get_messages
from django.db import DatabaseError, connection, transaction

from controlplane.audit import acting_as
from controlplane.crypto import decrypt
from controlplane.models import AppendOnlyError, AuditEvent
from routing.models import (
    AIModel,
    Budget,
    OperationLog,
    Policy,
    Provider,
    Route,
    ServiceKey,
)
from routing.models.gateway import hash_key

API_KEY = "sk-or-v1-5f3c9a7e1b2d4f60-very-secret"
MASKED = "••••••••cret"
RAW_KEY = re.compile(r"cpk_[0-9a-f]{12}_[A-Za-z0-9_-]{20,}")


# A browser's view of the admin.


def browser_form(response: Any, **overrides: Any) -> dict[str, Any]:
    """What a browser sends when the admin form on `response` is saved as shown,
    with `overrides`: passwords are never filled in, unticked boxes are left out."""
    assert response.status_code == 200
    all_forms: list[forms.BaseForm] = [response.context["adminform"].form]
    for inline in response.context["inline_admin_formsets"]:
        all_forms += [inline.formset.management_form, *inline.formset.forms]
    data: dict[str, Any] = {"_save": "Save"}
    for form in all_forms:
        for bound in form:
            widget = bound.field.widget
            value = bound.value()
            if isinstance(widget, forms.PasswordInput):
                data[bound.html_name] = ""
            elif isinstance(widget, forms.CheckboxInput):
                if value:
                    data[bound.html_name] = "on"
            else:
                data[bound.html_name] = "" if value is None else value
    for name, value in overrides.items():
        if value is False:
            data.pop(name, None)
        else:
            data[name] = "on" if value is True else value
    return data


def admin_url(model: type, view: str = "changelist", obj: Any = None) -> str:
    base = f"/admin/routing/{model._meta.model_name}/"
    if view == "changelist":
        return base
    if view == "add":
        return f"{base}add/"
    return f"{base}{obj.pk}/{view}/"


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def events(instance: Any, action: str | None = None) -> Any:
    found = AuditEvent.objects.filter(
        content_type=ContentType.objects.get_for_model(instance), object_id=str(instance.pk)
    ).order_by("id")
    return found.filter(action=action) if action else found


def action_names(response: Any) -> set[str]:
    action_form = response.context["action_form"]
    if action_form is None:
        return set()
    return {name for name, _label in action_form.fields["action"].choices if name}


# What there is to change.


@pytest.fixture
def catalog(db: Any) -> dict[str, AIModel]:
    acme = Provider.objects.create(name="acme", kind=Provider.Kind.COMPATIBLE)

    def model(model_id: str) -> AIModel:
        return AIModel.objects.create(
            provider=acme,
            model_id=model_id,
            context_length=128000,
            price_prompt=Decimal("0.000001"),
            price_completion=Decimal("0.000002"),
        )

    return {name: model(f"acme/{name}") for name in ("large", "medium", "small")}


@pytest.fixture
def budget(db: Any) -> Budget:
    return Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal("10"))


@pytest.fixture
def provider(db: Any) -> Provider:
    return Provider.objects.create(
        name="openrouter-main",
        kind=Provider.Kind.OPENROUTER,
        base_url="https://openrouter.ai/api/v1",
        api_key=API_KEY,
    )


@pytest.fixture
def service_key(db: Any) -> tuple[ServiceKey, str]:
    return ServiceKey.issue(name="billing worker", service="billing")


@pytest.fixture
def config(budget: Budget, provider: Provider, service_key: tuple[ServiceKey, str]) -> Any:
    """One object of each configuration model, by model name."""
    return {
        "route": Route.objects.get(operation="summarize"),
        "budget": budget,
        "policy": Policy.objects.get(mode="normal"),
        "provider": provider,
        "servicekey": service_key[0],
    }


CONFIG_MODELS = ["route", "budget", "policy", "provider", "servicekey"]


@pytest.fixture
def operation_log(db: Any) -> OperationLog:
    return OperationLog.objects.create(
        request_id="req-1",
        operation="summarize",
        model_requested="openai/gpt-4o-mini",
        model_used="openai/gpt-4o-mini",
        prompt_tokens=1200,
        completion_tokens=300,
        cost=Decimal("0.00036"),
        cost_source=OperationLog.CostSource.PROVIDER,
        latency_ms=850,
        status=OperationLog.Status.OK,
    )


# The three sections.


@pytest.mark.django_db
def test_the_routing_models_sit_in_the_three_sections(client, observer):
    client.force_login(observer)
    sections = {
        section["name"]: {m["object_name"] for m in section["models"]}
        for section in client.get("/admin/").context["app_list"]
    }
    assert {"Route", "Policy", "Budget", "Provider", "ServiceKey"} <= sections["Control"]
    assert {"OperationLog", "DailySpend", "BudgetDay"} <= sections["Observability"]
    assert {"AIModel", "Recommendation"} <= sections["Intelligence"]


# Observers and Operators see the configuration and change none of it.


@pytest.mark.django_db
@pytest.mark.parametrize("persona", ["observer", "operator"])
@pytest.mark.parametrize("name", CONFIG_MODELS)
def test_observers_and_operators_see_the_configuration_read_only(
    client, request, config, persona, name
):
    obj = config[name]
    client.force_login(request.getfixturevalue(persona))
    assert client.get(admin_url(type(obj))).status_code == 200
    response = client.get(admin_url(type(obj), "change", obj))
    assert response.status_code == 200
    assert response.context["has_change_permission"] is False
    assert b'name="_save"' not in response.content


@pytest.mark.django_db
@pytest.mark.parametrize("persona", ["observer", "operator"])
@pytest.mark.parametrize("name", CONFIG_MODELS)
def test_observers_and_operators_cannot_change_the_configuration(
    client, request, owner, config, persona, name
):
    obj = config[name]
    user = request.getfixturevalue(persona)
    client.force_login(owner)
    # The form as an Owner would send it, with an edit in it.
    data = browser_form(client.get(admin_url(type(obj), "change", obj)))
    data.update({k: "12" for k in ("description", "name", "daily_limit") if k in data})
    before = AuditEvent.objects.count()
    client.force_login(user)
    assert client.post(admin_url(type(obj), "change", obj), data).status_code == 403
    assert client.get(admin_url(type(obj), "add")).status_code == 403
    assert client.post(admin_url(type(obj), "add"), data).status_code == 403
    assert client.post(admin_url(type(obj), "delete", obj), {"post": "yes"}).status_code == 403
    listing = client.get(admin_url(type(obj)))
    assert action_names(listing) == set()
    client.post(
        admin_url(type(obj)),
        {"action": "delete_selected", "_selected_action": [obj.pk], "post": "yes"},
    )
    assert type(obj).objects.filter(pk=obj.pk).exists()
    assert AuditEvent.objects.count() == before


@pytest.mark.django_db
@pytest.mark.parametrize("persona", ["observer", "operator"])
def test_observers_and_operators_cannot_revoke_a_service_key(client, request, service_key, persona):
    key, raw = service_key
    client.force_login(request.getfixturevalue(persona))
    client.post(
        admin_url(ServiceKey), {"action": "revoke", "_selected_action": [key.pk], "index": "0"}
    )
    key.refresh_from_db()
    assert key.revoked_at is None
    assert ServiceKey.authenticate(raw) == key


# Owners change routes, budgets and policies, and every change is audited.


@pytest.mark.django_db
def test_an_owner_adds_a_route_with_fallbacks_and_it_is_audited(client, owner, catalog):
    client.force_login(owner)
    form = browser_form(
        client.get(admin_url(Route, "add")),
        operation="translate",
        primary_model=catalog["large"].pk,
        policy=Policy.objects.get(mode="code").pk,
        approval_threshold="0.25",
        **{"fallback_links-0-model": catalog["small"].pk, "fallback_links-0-position": "0"},
    )
    response = client.post(admin_url(Route, "add"), form)
    assert response.status_code == 302
    route = Route.objects.get(operation="translate")
    assert route.primary_model == catalog["large"]
    assert list(route.fallback_links.values_list("model__model_id", flat=True)) == ["acme/small"]
    created = events(route, "route.created").get()
    assert created.actor == owner
    assert created.before is None
    assert created.after["operation"] == "translate"
    assert created.after["primary_model_id"] == catalog["large"].pk
    assert Decimal(created.after["approval_threshold"]) == Decimal("0.25")
    assert events(route, "route.changed").get().after == {"fallbacks": [catalog["small"].pk]}
    assert events(route).count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize("not_a_key", ["1e20", str(2**70)])
def test_a_route_naming_a_model_by_something_not_a_key_is_refused_on_the_form(
    client, owner, catalog, not_a_key
):
    client.force_login(owner)
    form = browser_form(
        client.get(admin_url(Route, "add")),
        operation="translate",
        primary_model=not_a_key,
        policy=Policy.objects.get(mode="code").pk,
        **{"fallback_links-0-model": "abc", "fallback_links-0-position": "0"},
    )
    response = client.post(admin_url(Route, "add"), form)
    assert response.status_code == 200
    assert "primary_model" in response.context["adminform"].form.errors
    assert not Route.objects.filter(operation="translate").exists()


@pytest.mark.django_db
def test_an_owner_changes_a_route_and_the_trail_has_before_and_after(client, owner, catalog):
    route = Route.objects.get(operation="summarize")
    old_model = route.primary_model_id
    client.force_login(owner)
    form = browser_form(
        client.get(admin_url(Route, "change", route)),
        primary_model=catalog["medium"].pk,
        spends_money=True,
    )
    assert client.post(admin_url(Route, "change", route), form).status_code == 302
    route.refresh_from_db()
    assert route.primary_model == catalog["medium"]
    assert route.spends_money is True
    event = events(route, "route.changed").get()
    assert event.actor == owner
    # updated_at moves with every save, so the trail has it too.
    assert (
        set(event.before)
        == set(event.after)
        == {
            "primary_model_id",
            "spends_money",
            "updated_at",
        }
    )
    assert (event.before["primary_model_id"], event.after["primary_model_id"]) == (
        old_model,
        catalog["medium"].pk,
    )
    assert (event.before["spends_money"], event.after["spends_money"]) == (False, True)


@pytest.mark.django_db
def test_a_change_to_a_routes_fallbacks_is_audited(client, owner, catalog):
    route = Route.objects.get(operation="summarize")
    route.fallback_links.create(model=catalog["medium"], position=0)
    client.force_login(owner)
    form = browser_form(
        client.get(admin_url(Route, "change", route)),
        **{"fallback_links-0-DELETE": True, "fallback_links-1-model": catalog["small"].pk},
    )
    assert client.post(admin_url(Route, "change", route), form).status_code == 302
    assert list(route.fallback_links.values_list("model__model_id", flat=True)) == ["acme/small"]
    [event] = [e for e in events(route, "route.changed") if "fallbacks" in e.after]
    assert event.actor == owner
    assert event.before == {"fallbacks": [catalog["medium"].pk]}
    assert event.after == {"fallbacks": [catalog["small"].pk]}


@pytest.mark.django_db
def test_reordering_a_routes_fallbacks_is_audited(client, owner, catalog):
    route = Route.objects.get(operation="summarize")
    route.fallback_links.create(model=catalog["medium"], position=0)
    route.fallback_links.create(model=catalog["small"], position=1)
    client.force_login(owner)
    form = browser_form(
        client.get(admin_url(Route, "change", route)),
        **{"fallback_links-0-position": "2"},
    )
    assert client.post(admin_url(Route, "change", route), form).status_code == 302
    [event] = [e for e in events(route, "route.changed") if "fallbacks" in e.after]
    assert event.before == {"fallbacks": [catalog["medium"].pk, catalog["small"].pk]}
    assert event.after == {"fallbacks": [catalog["small"].pk, catalog["medium"].pk]}


@pytest.mark.django_db
def test_saving_a_route_unchanged_records_no_configuration_change(client, owner, catalog):
    route = Route.objects.get(operation="summarize")
    route.fallback_links.create(model=catalog["medium"], position=0)
    client.force_login(owner)
    form = browser_form(client.get(admin_url(Route, "change", route)))
    assert client.post(admin_url(Route, "change", route), form).status_code == 302
    # Only the timestamp, which moves with every save.
    assert [set(e.after) for e in events(route, "route.changed")] == [{"updated_at"}]


@pytest.mark.django_db
def test_an_owner_adds_and_changes_a_budget_and_both_are_audited(client, owner):
    client.force_login(owner)
    form = browser_form(
        client.get(admin_url(Budget, "add")),
        scope="operation",
        operation="chat",
        daily_limit="5",
        enabled=True,
    )
    assert client.post(admin_url(Budget, "add"), form).status_code == 302
    budget = Budget.objects.get(scope="operation", operation="chat")
    created = events(budget, "budget.created").get()
    assert created.actor == owner
    assert Decimal(created.after["daily_limit"]) == Decimal("5")

    form = browser_form(client.get(admin_url(Budget, "change", budget)), daily_limit="7.5")
    assert client.post(admin_url(Budget, "change", budget), form).status_code == 302
    budget.refresh_from_db()
    assert budget.daily_limit == Decimal("7.5")
    changed = events(budget, "budget.changed").get()
    assert changed.actor == owner
    assert set(changed.before) == set(changed.after) == {"daily_limit"}
    assert Decimal(changed.before["daily_limit"]) == Decimal("5")
    assert Decimal(changed.after["daily_limit"]) == Decimal("7.5")


@pytest.mark.django_db
def test_a_budget_whose_target_does_not_match_its_scope_is_refused(client, owner):
    client.force_login(owner)
    form = browser_form(client.get(admin_url(Budget, "add")), scope="global", operation="chat")
    response = client.post(admin_url(Budget, "add"), form)
    assert response.status_code == 200
    assert response.context["adminform"].form.errors
    assert not Budget.objects.exists()


@pytest.mark.django_db
def test_an_owner_deletes_a_budget_and_the_trail_keeps_what_it_was(client, owner, budget):
    client.force_login(owner)
    response = client.post(admin_url(Budget, "delete", budget), {"post": "yes"})
    assert response.status_code == 302
    assert not Budget.objects.filter(pk=budget.pk).exists()
    deleted = events(budget, "budget.deleted").get()
    assert deleted.actor == owner
    assert deleted.before["scope"] == "global"
    assert Decimal(deleted.before["daily_limit"]) == Decimal("10")


@pytest.mark.django_db
def test_an_owner_changes_a_policy_and_only_what_changed_is_audited(client, owner):
    policy = Policy.objects.get(mode="normal")
    old_iterations = policy.max_iterations
    client.force_login(owner)
    form = browser_form(
        client.get(admin_url(Policy, "change", policy)), max_iterations=old_iterations + 5
    )
    assert client.post(admin_url(Policy, "change", policy), form).status_code == 302
    policy.refresh_from_db()
    assert policy.max_iterations == old_iterations + 5
    event = events(policy, "policy.changed").get()
    assert event.actor == owner
    assert event.before == {"max_iterations": old_iterations}
    assert event.after == {"max_iterations": old_iterations + 5}


# Providers: the API key is encrypted at rest and never shown.


def raw_api_key_column(provider: Provider) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key FROM routing_provider WHERE id = %s", [provider.pk])
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_an_owner_adds_a_provider_and_its_key_is_stored_encrypted(client, owner):
    client.force_login(owner)
    form = browser_form(
        client.get(admin_url(Provider, "add")),
        name="openai-direct",
        kind="openai",
        base_url="https://api.openai.com/v1",
        api_key=API_KEY,
        timeout_seconds="30",
    )
    assert client.post(admin_url(Provider, "add"), form).status_code == 302
    provider = Provider.objects.get(name="openai-direct")
    assert provider.api_key == API_KEY
    stored = raw_api_key_column(provider)
    assert API_KEY not in stored
    assert decrypt(stored) == API_KEY
    created = events(provider, "provider.created").get()
    assert created.after["api_key"] == "[redacted]"
    assert API_KEY not in json.dumps(created.after)


@pytest.mark.django_db
def test_the_provider_list_shows_the_key_masked(client, owner, provider):
    client.force_login(owner)
    page = client.get(admin_url(Provider)).content.decode()
    assert MASKED in page
    assert API_KEY not in page


@pytest.mark.django_db
@pytest.mark.parametrize("persona", ["observer", "operator", "owner", "superuser"])
def test_no_admin_page_renders_a_providers_key(client, request, persona, provider):
    # The Owner changes something, so the history and the trail have an entry too.
    owner = request.getfixturevalue("owner")
    client.force_login(owner)
    form = browser_form(client.get(admin_url(Provider, "change", provider)), api_key=API_KEY + "2")
    assert client.post(admin_url(Provider, "change", provider), form).status_code == 302
    event = events(provider, "provider.changed").get()
    client.force_login(request.getfixturevalue(persona))
    pages = [
        admin_url(Provider),
        admin_url(Provider, "change", provider),
        admin_url(Provider, "history", provider),
        "/admin/controlplane/auditevent/",
        f"/admin/controlplane/auditevent/{event.pk}/change/",
    ]
    if persona in ("owner", "superuser"):
        pages += [admin_url(Provider, "add"), admin_url(Provider, "delete", provider)]
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, page
        content = response.content.decode()
        assert API_KEY not in content, page
        assert "very-secret" not in content, page


@pytest.mark.django_db
def test_a_read_only_provider_page_shows_the_key_masked(client, observer, provider):
    client.force_login(observer)
    content = client.get(admin_url(Provider, "change", provider)).content.decode()
    assert MASKED in content


@pytest.mark.django_db
def test_saving_a_provider_with_the_key_left_blank_keeps_the_key(client, owner, provider):
    client.force_login(owner)
    form = browser_form(client.get(admin_url(Provider, "change", provider)), timeout_seconds="90")
    assert form["api_key"] == ""
    assert client.post(admin_url(Provider, "change", provider), form).status_code == 302
    provider.refresh_from_db()
    assert provider.api_key == API_KEY
    assert provider.timeout_seconds == 90
    event = events(provider, "provider.changed").get()
    assert event.before == {"timeout_seconds": 60}
    assert event.after == {"timeout_seconds": 90}


@pytest.mark.django_db
def test_a_new_provider_key_is_audited_redacted(client, owner, provider):
    client.force_login(owner)
    new_key = "sk-or-v1-another-secret-value-0000"
    form = browser_form(client.get(admin_url(Provider, "change", provider)), api_key=new_key)
    assert client.post(admin_url(Provider, "change", provider), form).status_code == 302
    provider.refresh_from_db()
    assert provider.api_key == new_key
    event = events(provider, "provider.changed").get()
    assert event.before == {"api_key": "[redacted]"}
    assert event.after == {"api_key": "[redacted]"}


# Service keys: shown once, stored hashed, revocable, never edited.


def issue_through_admin(client: Any) -> tuple[Any, str]:
    form = browser_form(
        client.get(admin_url(ServiceKey, "add")),
        name="reports cron",
        service="reports",
        default_operation="summarize",
    )
    response = client.post(admin_url(ServiceKey, "add"), form)
    # The key is on the page answering the POST itself, not in a redirect's message.
    assert response.status_code == 200
    match = RAW_KEY.search(response.content.decode())
    assert match is not None
    return response, match.group(0)


@pytest.mark.django_db
def test_an_owner_creates_a_service_key_and_sees_it_once(client, owner):
    client.force_login(owner)
    response, raw = issue_through_admin(client)
    key = ServiceKey.objects.get(service="reports")
    assert key.created_by == owner
    assert key.default_operation == "summarize"
    assert ServiceKey.authenticate(raw) == key
    # It travels in no cookie (Django's messages cookie is signed, not encrypted) and
    # is on no later page.
    assert all(raw not in cookie.value for cookie in response.cookies.values())
    assert all(raw not in cookie.value for cookie in client.cookies.values())
    assert "no-store" in response["Cache-Control"]
    for page in (admin_url(ServiceKey), admin_url(ServiceKey, "change", key)):
        assert raw not in client.get(page).content.decode()


@pytest.mark.django_db
def test_a_service_key_is_stored_only_as_its_hash(client, owner):
    client.force_login(owner)
    _response, raw = issue_through_admin(client)
    key = ServiceKey.objects.get(service="reports")
    assert key.key_hash == hash_key(raw)
    stored = json.dumps(list(ServiceKey.objects.values()), default=str)
    assert raw not in stored
    assert raw.rsplit("_", 1)[1] not in stored  # not even the secret part
    trail = json.dumps([[e.before, e.after] for e in events(key)])
    assert raw not in trail
    assert key.key_hash not in trail


@pytest.mark.django_db
def test_an_owner_revokes_a_key_and_it_no_longer_authenticates(
    client, owner, service_key, django_capture_on_commit_callbacks
):
    key, raw = service_key
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    assert client.get("/v1/models", **bearer).status_code == 200
    client.force_login(owner)
    listing = client.get(admin_url(ServiceKey))
    assert "revoke" in action_names(listing)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            admin_url(ServiceKey), {"action": "revoke", "_selected_action": [key.pk], "index": "0"}
        )
    assert response.status_code == 302
    assert "1 key(s) revoked." in messages_of(response)
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert ServiceKey.authenticate(raw) is None
    client.logout()
    assert client.get("/v1/models", **bearer).status_code == 401
    event = events(key, "servicekey.changed").get()
    assert event.actor == owner
    assert event.before == {"revoked_at": None}
    assert event.after["revoked_at"] is not None


@pytest.mark.django_db
def test_not_even_an_owner_can_edit_or_delete_a_service_key(client, owner, service_key):
    key, raw = service_key
    client.force_login(owner)
    response = client.get(admin_url(ServiceKey, "change", key))
    assert response.status_code == 200
    assert response.context["has_change_permission"] is False
    response = client.post(
        admin_url(ServiceKey, "change", key),
        {"name": "renamed", "service": "other", "default_operation": "chat"},
    )
    assert response.status_code == 403
    assert client.post(admin_url(ServiceKey, "delete", key), {"post": "yes"}).status_code == 403
    assert "delete_selected" not in action_names(client.get(admin_url(ServiceKey)))
    key.refresh_from_db()
    assert (key.name, key.service) == ("billing worker", "billing")
    assert ServiceKey.authenticate(raw) == key


# The cost log is append-only.


@pytest.mark.django_db
@pytest.mark.parametrize("persona", ["observer", "owner", "superuser"])
def test_everyone_sees_the_cost_log(client, request, persona, operation_log):
    client.force_login(request.getfixturevalue(persona))
    listing = client.get(admin_url(OperationLog))
    assert listing.status_code == 200
    assert b"openai/gpt-4o-mini" in listing.content
    detail = client.get(admin_url(OperationLog, "change", operation_log))
    assert detail.status_code == 200
    assert detail.context["has_change_permission"] is False


@pytest.mark.django_db
@pytest.mark.parametrize("persona", ["owner", "superuser"])
def test_nobody_changes_or_deletes_the_cost_log_through_the_admin(
    client, request, persona, operation_log
):
    client.force_login(request.getfixturevalue(persona))
    change = admin_url(OperationLog, "change", operation_log)
    assert client.post(change, {"cost": "0", "status": "ok"}).status_code == 403
    assert (
        client.post(admin_url(OperationLog, "delete", operation_log), {"post": "yes"}).status_code
        == 403
    )
    assert client.get(admin_url(OperationLog, "add")).status_code == 403
    assert action_names(client.get(admin_url(OperationLog))) == set()
    client.post(
        admin_url(OperationLog),
        {"action": "delete_selected", "_selected_action": [operation_log.pk], "post": "yes"},
    )
    stored = OperationLog.objects.get(pk=operation_log.pk)
    assert (stored.cost, stored.status) == (Decimal("0.00036"), "ok")


@pytest.mark.django_db
def test_the_cost_log_refuses_a_save_of_an_existing_row(operation_log):
    operation_log.cost = Decimal("0")
    with pytest.raises(AppendOnlyError):
        operation_log.save()
    assert OperationLog.objects.get(pk=operation_log.pk).cost == Decimal("0.00036")


@pytest.mark.django_db
def test_the_cost_log_refuses_a_delete(operation_log):
    with pytest.raises(AppendOnlyError):
        operation_log.delete()
    with pytest.raises(AppendOnlyError):
        OperationLog.objects.filter(pk=operation_log.pk).delete()
    assert OperationLog.objects.filter(pk=operation_log.pk).exists()


@pytest.mark.django_db
def test_the_cost_log_refuses_a_queryset_update(operation_log):
    with pytest.raises(AppendOnlyError):
        OperationLog.objects.filter(pk=operation_log.pk).update(cost=Decimal("0"))
    with pytest.raises(AppendOnlyError):
        OperationLog.objects.bulk_update([operation_log], ["cost"])
    assert OperationLog.objects.get(pk=operation_log.pk).cost == Decimal("0.00036")


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_database_refuses_a_raw_update_of_the_cost_log(operation_log):
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("UPDATE routing_operationlog SET cost = 0 WHERE id = %s", [operation_log.pk])
    assert OperationLog.objects.get(pk=operation_log.pk).cost == Decimal("0.00036")


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_database_refuses_a_raw_delete_of_the_cost_log(operation_log):
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("DELETE FROM routing_operationlog WHERE id = %s", [operation_log.pk])
    assert OperationLog.objects.filter(pk=operation_log.pk).exists()


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_database_refuses_an_update_through_the_base_manager(operation_log):
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        OperationLog._base_manager.filter(pk=operation_log.pk).update(cost=Decimal("0"))
    assert OperationLog.objects.get(pk=operation_log.pk).cost == Decimal("0.00036")


@pytest.mark.django_db
def test_a_routes_history_page_shows_its_audit_trail_with_before_and_after(client, owner, observer):

    route = Route.objects.get(operation="chat")
    with acting_as(owner, "10.9.8.7"):
        route.approval_threshold = Decimal("0.25")
        route.save()

    client.force_login(observer)
    response = client.get(f"/admin/routing/route/{route.pk}/history/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "route.changed" in page
    assert owner.username in page
    assert "10.9.8.7" in page
    assert "0.25" in page


@pytest.mark.django_db
def test_an_outsider_cannot_see_a_routes_history(client, outsider):

    route = Route.objects.get(operation="chat")
    client.force_login(outsider)
    assert client.get(f"/admin/routing/route/{route.pk}/history/").status_code in (302, 403)
