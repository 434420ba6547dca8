"""The one vocabulary of who may do what: tiers grant Django permissions that each app
declares for itself, and only the tiers grant anything."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import AnonymousUser, Group, Permission, User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

from controlplane import tiers
from controlplane.tiers import (
    PermissionSnapshot,
    Tier,
    permission_required_for_staff,
    staff_required,
    tier_permissions,
)
from routing.models import Route
from tests.personas import make_user

# The backend that answers permission questions (django-axes' backend comes first but
# only refuses locked-out logins).
TIERS = "controlplane.tiers.TierBackend"


def _permission(name: str) -> Permission:
    app_label, codename = name.split(".")
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)


# Each app declares its own tier permissions.


def test_each_app_declares_its_own_operator_permissions():
    declared = tier_permissions()
    assert set(declared) == {"controlplane", "routing", "chat", "selfheal", "healthmon"}
    for app_label, names in declared.items():
        assert all(name.startswith(f"{app_label}.") for name in names)
    assert "selfheal.operate_task" in declared["selfheal"]
    assert "chat.operate_run" in declared["chat"]


def test_the_core_grants_no_other_apps_permission_by_name():
    named = [
        name
        for value in vars(tiers).values()
        if isinstance(value, tuple | list)
        for name in value
        if isinstance(name, str) and "." in name
    ]
    assert named  # the account permissions the core manages
    assert all(name.startswith("auth.") for name in named)


@pytest.mark.django_db
def test_each_tier_gets_what_the_apps_declare(observer, operator, owner):
    for name in ("selfheal.operate_task", "chat.operate_run", "routing.dismiss_recommendation"):
        assert not observer.has_perm(name)
        assert operator.has_perm(name)
        assert owner.has_perm(name)
    assert observer.has_perm("routing.view_route")
    assert not operator.has_perm("routing.change_route")
    assert owner.has_perm("routing.change_route")
    # Money and what Owners decide stay with Owners.
    assert not operator.has_perm("chat.raise_cost_budget")
    assert not operator.has_perm("controlplane.decide_owner_approval")
    assert owner.has_perm("chat.raise_cost_budget")
    assert owner.has_perm("controlplane.decide_owner_approval")


# Only the tiers grant anything.


@pytest.mark.django_db
def test_a_permission_given_to_an_account_directly_grants_nothing(observer):
    observer.user_permissions.add(_permission("routing.change_route"))
    observer = User.objects.get(pk=observer.pk)  # a fresh permission cache
    assert not observer.has_perm("routing.change_route")
    assert observer not in User.objects.with_perm("routing.change_route", backend=TIERS)


@pytest.mark.django_db
def test_a_group_that_is_not_a_tier_grants_nothing(observer):
    helpdesk = Group.objects.create(name="Helpdesk")
    helpdesk.permissions.add(_permission("routing.change_route"))
    observer.groups.add(helpdesk)
    observer = User.objects.get(pk=observer.pk)
    assert not observer.has_perm("routing.change_route")
    assert observer not in User.objects.with_perm("routing.change_route", backend=TIERS)


def test_the_model_backend_still_asks_the_hook_the_tier_backend_overrides():
    # TierBackend narrows ModelBackend's private group query; a rename in Django
    # would silently bring every group's permissions back.
    hook = ModelBackend._get_group_permissions
    assert list(inspect.signature(hook).parameters) == ["self", "user_obj"]
    assert "_get_%s_permissions" in inspect.getsource(ModelBackend._get_permissions)


@pytest.mark.django_db
def test_a_directly_assigned_change_route_does_not_let_an_observer_change_a_route(client, observer):
    route = Route.objects.get(operation="summarize")
    observer.user_permissions.add(_permission("routing.change_route"))
    client.force_login(observer)
    url = f"/admin/routing/route/{route.pk}/change/"
    response = client.get(url)
    assert response.status_code == 200
    assert response.context["has_change_permission"] is False
    assert b'name="_save"' not in response.content
    assert client.post(url, {"operation": "renamed", "_save": "Save"}).status_code == 403
    route.refresh_from_db()
    assert route.operation == "summarize"


# The view decorators: anonymous to the login page, outsiders and the rest 403.


def _ok(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


def _ask(view: Any, user: Any) -> Any:
    request = RequestFactory().get("/somewhere/")
    request.user = user
    try:
        return view(request).status_code
    except PermissionDenied:
        return 403


@pytest.mark.django_db
def test_a_staff_page_sends_anonymous_visitors_to_log_in_and_refuses_outsiders(outsider, observer):
    view = staff_required(_ok)
    assert _ask(view, AnonymousUser()) == 302
    assert _ask(view, outsider) == 403
    assert _ask(view, observer) == 200


@pytest.mark.django_db
def test_a_permission_page_refuses_staff_without_the_permission(
    outsider, observer, operator, superuser
):
    view = permission_required_for_staff("selfheal.operate_task")(_ok)
    assert _ask(view, outsider) == 403
    assert _ask(view, observer) == 403
    assert _ask(view, operator) == 200
    assert _ask(view, superuser) == 200


@pytest.mark.django_db
def test_an_outsider_with_a_direct_permission_is_still_an_outsider(outsider):
    outsider.user_permissions.add(_permission("selfheal.operate_task"))
    view = permission_required_for_staff("selfheal.operate_task")(_ok)
    assert _ask(view, User.objects.get(pk=outsider.pk)) == 403


# Fragments rendered away from a request ask a snapshot, the way a page asks `perms`.


@pytest.mark.django_db
def test_a_permission_snapshot_reads_like_perms(operator):
    perms = PermissionSnapshot.of(operator, ["chat.operate_run", "chat.raise_cost_budget"])
    assert perms["chat"]["operate_run"] is True
    assert "raise_cost_budget" not in perms["chat"]
    assert "chat.operate_run" in perms
    assert "chat.raise_cost_budget" not in perms
    other = make_user("otto-operator", Tier.OPERATOR)
    same = PermissionSnapshot.of(other, ["chat.operate_run", "chat.raise_cost_budget"])
    # One rendered frame serves both.
    assert hash(same) == hash(perms)
    assert same == perms
