"""The people every test can use: one per tier, an outsider and anonymous."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from controlplane.tiers import TIER_GROUPS, Tier

PASSWORD = "correct horse battery staple"


def make_user(username: str, tier: Tier | None = None, **extra: Any) -> Any:
    user = get_user_model().objects.create_user(username=username, password=PASSWORD, **extra)
    if tier is not None:
        user.groups.add(Group.objects.get(name=TIER_GROUPS[tier]))
    return user
