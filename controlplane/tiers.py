"""Staff tiers and the one way to ask who may do what.

Observer sees everything and changes nothing; Operator runs chats, diagnoses and
repairs and approves what is not about money; Owner changes routes, budgets and
toggles and approves money.

A tier is a Django group, and what a tier allows is a set of Django permissions on
that group. Every layer asks the same question the same way:

- a view: `@permission_required_for_staff("chat.operate_run")` (pages every tier
  sees: `@staff_required`);
- a template: `{% if perms.chat.operate_run %}`;
- a consumer, the admin and domain code: `user.has_perm("chat.operate_run")`.

Each app declares its own tier permissions on its AppConfig, as codenames of its own
models' permissions: `operator_permissions = ("operate_run",)`. An app that declares
them (even empty) is a product app: Observers get its `view_*` permissions, Operators
those plus its operator permissions, Owners every permission it has. The groups are
created by a data migration; their permissions are kept in line after every
`migrate`, so a model added later gets the right permissions without another data
migration. Only those groups grant anything (`TierBackend`): per-user permissions and
other groups are ignored, so nobody gains a change permission outside the tiers.

"Staff" means an active account in one of the tiers (superusers count as Owners);
any other account is an outsider and gets 403 everywhere.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from django.apps import apps
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.models import AnonymousUser, Group, Permission, User
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django_htmx.middleware import HtmxDetails

# The acting person of every domain function, view and consumer: an account of the
# project's user model. Whether it may do a thing is asked one way,
# `user.has_perm("app.codename")`, and the tiers grant those permissions.
type StaffUser = User


class StaffRequest(HttpRequest):
    """The request of a staff page: its user passed `staff_required`, and
    django-htmx's middleware says whether htmx sent it."""

    user: StaffUser
    htmx: HtmxDetails


class Tier(enum.IntEnum):
    NONE = 0
    OBSERVER = 1
    OPERATOR = 2
    OWNER = 3

    @property
    def label(self) -> str:
        return self.name.title()


TIER_GROUPS = {Tier.OBSERVER: "Observer", Tier.OPERATOR: "Operator", Tier.OWNER: "Owner"}

# Accounts are Django's own model, managed by the core: Owners add and change them
# (their tiers included; only a superuser makes a superuser, see controlplane.admin).
OWNER_ACCOUNT_PERMISSIONS = ("auth.add_user", "auth.change_user")
ACCOUNT_VIEW_PERMISSIONS = ("auth.view_user", "auth.view_group")


def tier_of(user: StaffUser | AnonymousUser | None) -> Tier:
    """The tier a person is in, for membership and for display (the header's badge).
    What they may do is asked with `user.has_perm`, never by comparing tiers."""
    if user is None or isinstance(user, AnonymousUser) or not user.is_authenticated:
        return Tier.NONE
    if not user.is_active:
        return Tier.NONE
    cached: Tier | None = getattr(user, "_controlplane_tier", None)
    if cached is not None:
        return cached
    if user.is_superuser:
        tier = Tier.OWNER
    else:
        names = set(user.groups.values_list("name", flat=True))
        tier = max((t for t, name in TIER_GROUPS.items() if name in names), default=Tier.NONE)
    user._controlplane_tier = tier  # type: ignore[attr-defined]
    return tier


def is_staff_member(user: StaffUser | AnonymousUser | None) -> bool:
    """The one staff check every staff page, the admin and every consumer make."""
    return tier_of(user) >= Tier.OBSERVER


type View = Callable[..., HttpResponse]


def _staff_view(view: View, permission: str | None) -> View:
    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not is_staff_member(request.user):
            raise PermissionDenied("This page is for Observers, Operators and Owners.")
        if permission is not None and not request.user.has_perm(permission):
            raise PermissionDenied(f"Your tier does not allow this ({permission}).")
        return view(request, *args, **kwargs)

    return wrapped


def staff_required(view: View) -> View:
    """View decorator for pages every tier sees: anonymous visitors go to the login
    page, outsiders get 403."""
    return _staff_view(view, None)


def permission_required_for_staff(permission: str) -> Callable[[View], View]:
    """View decorator: as `staff_required`, and staff without `permission` get 403."""

    def decorator(view: View) -> View:
        return _staff_view(view, permission)

    return decorator


def tier_context(request: HttpRequest) -> dict[str, Any]:
    # Display only (the header's tier badge); templates ask `perms` what is allowed.
    return {"tier": tier_of(getattr(request, "user", None))}


@dataclass(frozen=True)
class PermissionSnapshot:
    """Some of a person's permissions, asked once, for fragments rendered away from a
    request (a consumer renders a live frame once for every viewer who has the same
    snapshot). Reads like Django's `perms` in a template: `perms.chat.operate_run`
    and `"chat.operate_run" in perms`."""

    granted: frozenset[str]

    @classmethod
    def of(cls, user: StaffUser, permissions: Iterable[str]) -> PermissionSnapshot:
        return cls(frozenset(name for name in permissions if user.has_perm(name)))

    def __getitem__(self, app_label: str) -> dict[str, bool]:
        prefix = f"{app_label}."
        return {name.removeprefix(prefix): True for name in self.granted if name.startswith(prefix)}

    def __contains__(self, permission: object) -> bool:
        return permission in self.granted


class TierBackend(ModelBackend):
    """Django's model backend, counting only the tier groups' permissions: a
    permission given to one account directly, or through a group that is not a tier,
    grants nothing (an Owner cannot hand an Observer `routing.change_route`)."""

    def get_user_permissions(self, user_obj: Any, obj: Any = None) -> set[str]:
        return set()

    # ModelBackend's hook for the group query (private, but the one place that keeps
    # its per-user permission cache; tests/controlplane/test_tiers.py fails loudly if
    # Django renames it).
    def _get_group_permissions(self, user_obj: Any) -> QuerySet[Permission]:
        return Permission.objects.filter(group__user=user_obj, group__name__in=TIER_GROUPS.values())

    def with_perm(
        self,
        perm: str | Permission,
        is_active: bool = True,
        include_superusers: bool = True,
        obj: Any = None,
    ) -> QuerySet[User]:
        # ModelBackend would also find accounts holding the permission directly.
        if isinstance(perm, str):
            app_label, codename = perm.split(".", 1)
            perm = Permission.objects.get(content_type__app_label=app_label, codename=codename)
        query = Q(groups__permissions=perm, groups__name__in=TIER_GROUPS.values())
        if include_superusers:
            query |= Q(is_superuser=True)
        users = User.objects.filter(query)
        if is_active is not None:
            users = users.filter(is_active=is_active)
        return users.distinct()


def tier_permissions() -> dict[str, tuple[str, ...]]:
    """Each product app's operator permissions ("app_label.codename"), from the
    `operator_permissions` its AppConfig declares; apps without it are not product
    apps (Django's own, channels, ...)."""
    declared: dict[str, tuple[str, ...]] = {}
    for config in apps.get_app_configs():
        codenames = getattr(config, "operator_permissions", None)
        if codenames is not None:
            declared[config.label] = tuple(f"{config.label}.{c}" for c in codenames)
    return declared


def _permissions(names: Iterable[str]) -> list[Permission]:
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
    declared = tier_permissions()
    product = Permission.objects.filter(content_type__app_label__in=declared)
    view_all = list(product.filter(codename__startswith="view_")) + _permissions(
        ACCOUNT_VIEW_PERMISSIONS
    )
    operator = view_all + _permissions(name for names in declared.values() for name in names)
    owner = list(product) + _permissions(ACCOUNT_VIEW_PERMISSIONS + OWNER_ACCOUNT_PERMISSIONS)
    groups[Tier.OBSERVER].permissions.set(view_all)  # type: ignore[union-attr]
    groups[Tier.OPERATOR].permissions.set(operator)  # type: ignore[union-attr]
    groups[Tier.OWNER].permissions.set(owner)  # type: ignore[union-attr]
