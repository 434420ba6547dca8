"""Staff tiers: Observer sees everything and changes nothing; Operator runs chats,
diagnoses and repairs and approves what is not about money; Owner changes routes,
budgets and toggles and approves money.

A tier is a Django group. "Staff" in this product means an active account in one of
the tiers (superusers count as Owners); any other account is an outsider and gets
403 everywhere. The groups are created by a data migration; their permissions are
kept in line with `TIER_PERMISSIONS` after every `migrate`, so a model added by a
later migration gets the right permissions without another data migration.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.models import AnonymousUser, Group, Permission, User
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

# The acting person of every domain function, view and consumer: an account of the
# project's user model. Whether it may do a thing is asked one way,
# `user.has_perm("app.codename")`, and the tiers grant those permissions.
type StaffUser = User

PROJECT_APPS = ("controlplane", "routing", "chat", "selfheal", "healthmon")


class Tier(enum.IntEnum):
    NONE = 0
    OBSERVER = 1
    OPERATOR = 2
    OWNER = 3

    @property
    def label(self) -> str:
        return self.name.title()

    @classmethod
    def from_name(cls, name: str) -> Tier:
        return cls[name.upper()]


TIER_GROUPS = {Tier.OBSERVER: "Observer", Tier.OPERATOR: "Operator", Tier.OWNER: "Owner"}

# Permissions beyond "view everything" (which every tier has), as "app_label.codename".
# Owners additionally get every permission of the project apps and user management.
# Later apps add their operator permissions here.
OPERATOR_PERMISSIONS: list[str] = [
    "controlplane.decide_approval",
    "controlplane.request_approval",
    "selfheal.run_playbook",
    "selfheal.rollback_execution",
    "selfheal.operate_task",
]
OWNER_EXTRA_PERMISSIONS: list[str] = [
    "auth.add_user",
    "auth.change_user",
    "auth.view_user",
    "auth.view_group",
]


def tier_of(user: Any) -> Tier:
    if user is None or isinstance(user, AnonymousUser) or not user.is_authenticated:
        return Tier.NONE
    if not user.is_active:
        return Tier.NONE
    cached = getattr(user, "_controlplane_tier", None)
    if cached is not None:
        return cached
    if user.is_superuser:
        tier = Tier.OWNER
    else:
        names = set(user.groups.values_list("name", flat=True))
        tier = max((t for t, name in TIER_GROUPS.items() if name in names), default=Tier.NONE)
    user._controlplane_tier = tier
    return tier


def is_staff_member(user: Any) -> bool:
    return tier_of(user) >= Tier.OBSERVER


def tier_required(minimum: Tier) -> Callable:
    """View decorator: anonymous users go to the login page, outsiders and lower tiers get 403."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if tier_of(request.user) < minimum:
                raise PermissionDenied(f"This needs the {minimum.label} tier.")
            return view(request, *args, **kwargs)

        return wrapped

    return decorator


def tier_context(request: HttpRequest) -> dict[str, Any]:
    tier = tier_of(getattr(request, "user", None))
    return {
        "tier": tier,
        "is_operator": tier >= Tier.OPERATOR,
        "is_owner": tier >= Tier.OWNER,
    }


def _permissions(names: list[str]) -> list[Permission]:
    found: list[Permission] = []
    for name in names:
        app_label, codename = name.split(".", 1)
        found.extend(
            Permission.objects.filter(content_type__app_label=app_label, codename=codename)
        )
    return found


def sync_tier_permissions(**kwargs: Any) -> None:
    """Give each tier group exactly the permissions its tier grants (post_migrate)."""
    groups = {tier: Group.objects.filter(name=name).first() for tier, name in TIER_GROUPS.items()}
    if not all(groups.values()):
        return  # the data migration that creates them has not run (or a flush removed them)
    project = Permission.objects.filter(content_type__app_label__in=PROJECT_APPS)
    view_all = list(project.filter(codename__startswith="view_")) + _permissions(
        ["auth.view_user", "auth.view_group"]
    )
    operator = view_all + _permissions(OPERATOR_PERMISSIONS)
    owner = list(project) + _permissions(OWNER_EXTRA_PERMISSIONS)
    groups[Tier.OBSERVER].permissions.set(view_all)  # type: ignore[union-attr]
    groups[Tier.OPERATOR].permissions.set(operator)  # type: ignore[union-attr]
    groups[Tier.OWNER].permissions.set(owner)  # type: ignore[union-attr]
