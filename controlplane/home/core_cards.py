"""The core's own cards on Home: System health, pending approvals, the toggles that
are off and the recent changes; and the pages of the core's objects for the latter."""

from __future__ import annotations

from urllib.parse import urlencode

from django.urls import reverse

from controlplane.dashboard import pending_approvals_context
from controlplane.home.cards import for_everyone, register_home_card
from controlplane.home.changes import (
    changes_context,
    each_object,
    register_object_pages,
    toggles_off_context,
)
from controlplane.home.health import system_health_context
from controlplane.models import FeatureToggle


def toggle_pages(object_ids: list[str]) -> dict[str, str]:
    """A toggle's row on the Toggles page, its switch open (one query: the keys)."""
    keys = FeatureToggle.objects.filter(pk__in=[i for i in object_ids if i.isdigit()])
    return {
        str(pk): f"{reverse('toggles')}?{urlencode({'toggle': key})}#toggle-{key}"
        for pk, key in keys.values_list("pk", "key")
    }


def register() -> None:
    """Called once from the core's ready()."""
    register_home_card(
        "system_health",
        "controlplane/partials/home/system_health.html",
        for_everyone(system_health_context),
        order=10,
    )
    register_home_card(
        "approvals",
        "controlplane/partials/pending_approvals.html",
        pending_approvals_context,
        order=20,
        events=("approval.changed",),
    )
    register_home_card(
        "toggles",
        "controlplane/partials/home/toggles_off.html",
        for_everyone(toggles_off_context),
        order=80,
        events=("home.audit",),
    )
    register_home_card(
        "changes",
        "controlplane/partials/home/changes.html",
        for_everyone(changes_context),
        order=90,
        events=("home.audit",),
    )
    register_object_pages(
        "controlplane",
        "approval",
        each_object(lambda pk: f"{reverse('approvals')}#decision-{pk}"),
    )
    register_object_pages("controlplane", "featuretoggle", toggle_pages)
