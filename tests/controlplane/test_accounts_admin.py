"""Accounts in the operator panel: what someone may do is their tier and nothing else.

Owners add accounts and put them in tiers; nobody is offered per-user permissions;
only a superuser makes, changes or removes a superuser.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core.exceptions import PermissionDenied
from django.test import RequestFactory

from controlplane.admin import StaffAccountAdmin
from controlplane.admin_site import ControlPlaneAdminSite
from controlplane.tiers import TIER_GROUPS, Tier
from tests.personas import make_user, tier_group


def _url(user: User, view: str = "change") -> str:
    return f"/admin/auth/user/{user.pk}/{view}/"


def _account_form(user: User, **overrides: Any) -> dict[str, Any]:
    """The change form as a browser sends it saved unchanged, with `overrides` (a
    ticked box is "on"; an unticked one is left out)."""
    data: dict[str, Any] = {
        "_save": "Save",
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "groups": list(user.groups.values_list("pk", flat=True)),
        "date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
        "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
        "is_active": "on" if user.is_active else None,
        "is_superuser": "on" if user.is_superuser else None,
    }
    for name, value in overrides.items():
        data[name] = "on" if value is True else value
    return {name: value for name, value in data.items() if value not in (None, False)}


@pytest.mark.django_db
@pytest.mark.parametrize("persona", ["owner", "superuser"])
def test_it_offers_no_per_user_permissions(client, request, observer, persona):
    client.force_login(request.getfixturevalue(persona))
    response = client.get(_url(observer))
    assert response.status_code == 200
    assert "user_permissions" not in response.context["adminform"].form.fields
    assert b"user_permissions" not in response.content


@pytest.mark.django_db
def test_it_offers_only_the_tier_groups(client, owner, observer):
    Group.objects.create(name="Helpdesk")
    client.force_login(owner)
    field = client.get(_url(observer)).context["adminform"].form.fields["groups"]
    assert {group.name for group in field.queryset} == set(TIER_GROUPS.values())


@pytest.mark.django_db
def test_an_owner_cannot_make_itself_superuser(client, owner):
    client.force_login(owner)
    response = client.get(_url(owner))
    assert "is_superuser" not in response.context["adminform"].form.fields
    assert b'name="is_superuser"' not in response.content
    data = _account_form(owner, is_superuser=True)
    assert client.post(_url(owner), data).status_code == 302
    owner.refresh_from_db()
    assert owner.is_superuser is False


@pytest.mark.django_db
def test_an_owner_cannot_make_another_account_superuser(client, owner, observer):
    client.force_login(owner)
    data = _account_form(observer, is_superuser=True, first_name="Olive")
    assert client.post(_url(observer), data).status_code == 302
    observer.refresh_from_db()
    assert observer.first_name == "Olive"  # the rest of the form was saved
    assert observer.is_superuser is False


@pytest.mark.django_db
def test_the_superuser_flag_is_refused_past_the_form_too(owner, observer):
    model_admin = StaffAccountAdmin(User, ControlPlaneAdminSite())
    request = RequestFactory().post(_url(observer))
    request.user = owner
    observer.is_superuser = True
    with pytest.raises(PermissionDenied):
        model_admin.save_model(request, observer, form=None, change=True)
    observer.refresh_from_db()
    assert observer.is_superuser is False


@pytest.mark.django_db
def test_an_owner_cannot_change_or_remove_a_superuser(client, owner, superuser):
    client.force_login(owner)
    response = client.get(_url(superuser))
    assert response.context["has_change_permission"] is False
    assert client.post(_url(superuser), {"username": "taken-over"}).status_code == 403
    assert client.post(_url(superuser, "password"), {}).status_code == 403
    assert client.post(_url(superuser, "delete"), {"post": "yes"}).status_code == 403
    superuser.refresh_from_db()
    assert superuser.username == "root-admin"


@pytest.mark.django_db
def test_a_superuser_makes_a_superuser(client, superuser, owner):
    client.force_login(superuser)
    data = _account_form(owner, is_superuser=True)
    assert client.post(_url(owner), data).status_code == 302
    owner.refresh_from_db()
    assert owner.is_superuser is True


@pytest.mark.django_db
def test_an_owner_puts_an_account_in_a_tier(client, owner):
    newcomer = make_user("nina-newcomer")
    client.force_login(owner)
    data = _account_form(newcomer, groups=[tier_group(Tier.OPERATOR).pk])
    assert client.post(_url(newcomer), data).status_code == 302
    assert list(newcomer.groups.values_list("name", flat=True)) == ["Operator"]


@pytest.mark.django_db
@pytest.mark.parametrize("persona", ["observer", "operator"])
def test_observers_and_operators_cannot_change_an_account(client, request, persona):
    user: Any = request.getfixturevalue(persona)
    data = _account_form(user, groups=[tier_group(Tier.OWNER).pk])
    client.force_login(user)
    assert client.get(_url(user)).context["has_change_permission"] is False
    assert client.post(_url(user), data).status_code == 403
    assert client.get("/admin/auth/user/add/").status_code == 403
    assert not user.groups.filter(name="Owner").exists()


@pytest.mark.django_db
def test_an_outsider_cannot_see_the_accounts(client, outsider, observer):
    client.force_login(outsider)
    assert client.get(_url(observer), follow=True).status_code == 403


@pytest.mark.django_db
def test_a_group_number_past_any_key_is_refused_on_the_form(client, owner, observer):
    client.force_login(owner)
    response = client.post(_url(observer), _account_form(observer, groups=[str(2**70)]))
    assert response.status_code == 200
    assert "groups" in response.context["adminform"].form.errors
    assert list(observer.groups.all()) == [tier_group(Tier.OBSERVER)]


@pytest.mark.django_db
def test_a_permission_number_past_any_key_is_refused_on_the_group_form(client, superuser):
    client.force_login(superuser)
    response = client.post(
        "/admin/auth/group/add/", {"name": "night shift", "permissions": [str(2**70)]}
    )
    assert response.status_code == 200
    assert "permissions" in response.context["adminform"].form.errors
    assert not Group.objects.filter(name="night shift").exists()
