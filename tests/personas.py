"""The people every test can use: one per tier, an outsider and anonymous."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from controlplane.tiers import TIER_GROUPS, StaffUser, Tier, sync_tier_permissions

PASSWORD = "correct horse battery staple"


def make_user(username: str, tier: Tier | None = None, **extra: Any) -> StaffUser:
    user = get_user_model().objects.create_user(username=username, password=PASSWORD, **extra)
    if tier is not None:
        user.groups.add(tier_group(tier))
    return user


def tier_group(tier: Tier) -> Group:
    """The tier's group, recreated with its permissions when a transactional test's
    flush removed what the data migration made."""
    if not Group.objects.filter(name=TIER_GROUPS[tier]).exists():
        for name in TIER_GROUPS.values():
            Group.objects.get_or_create(name=name)
        sync_tier_permissions()
    return Group.objects.get(name=TIER_GROUPS[tier])
