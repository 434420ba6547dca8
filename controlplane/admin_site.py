"""The operator panel: the Django admin, open to every tier, organised in three sections."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from controlplane.admin_changelists import InRangeListMixin
from controlplane.admin_values import ReadableValuesMixin
from controlplane.tiers import is_staff_member

OBSERVABILITY = "Observability"
CONTROL = "Control"
INTELLIGENCE = "Intelligence"
SECTIONS = (OBSERVABILITY, CONTROL, INTELLIGENCE)
SECTION_HINTS = {
    OBSERVABILITY: "What happened: audit trail, deliveries, costs, runs, logs.",
    CONTROL: "What may happen: toggles, approvals, routes, budgets, accounts.",
    INTELLIGENCE: "What the product knows: model catalog, playbooks, error patterns.",
}


class ControlPlaneAdminSite(admin.AdminSite):
    site_header = "Control plane"
    site_title = "Control plane admin"
    index_title = "Operator panel"
    site_url = "/"

    def register(self, model_or_iterable: Any, admin_class: Any = None, **options: Any) -> None:
        # Every list refuses a query string its database cannot run (admin_changelists)
        # and shows money and times as the product does (admin_values), whichever
        # ModelAdmin it comes from.
        admin_class = admin_class or admin.ModelAdmin
        for mixin in (InRangeListMixin, ReadableValuesMixin):
            if not issubclass(admin_class, mixin):
                admin_class = type(admin_class.__name__, (mixin, admin_class), {})
        super().register(model_or_iterable, admin_class, **options)

    def has_permission(self, request: HttpRequest) -> bool:
        # Staff means a tier, not Django's is_staff flag; the model admins then apply
        # each tier's permissions (Observers see, Owners change).
        return is_staff_member(request.user)

    def login(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # The admin's own login form accepts only is_staff accounts, which tiers do not
        # use, so everyone logs in on the product's page; outsiders get 403 as elsewhere.
        if self.has_permission(request):
            return super().login(request, extra_context)
        if request.user.is_authenticated:
            raise PermissionDenied("The operator panel is for Observers, Operators and Owners.")
        next_url = request.GET.get(REDIRECT_FIELD_NAME) or reverse(
            "admin:index", current_app=self.name
        )
        return redirect_to_login(next_url)

    def get_app_list(
        self, request: HttpRequest, app_label: str | None = None
    ) -> list[dict[str, Any]]:
        apps = super().get_app_list(request, app_label)
        if app_label is not None:
            return apps
        sections: dict[str, list[dict[str, Any]]] = {name: [] for name in SECTIONS}
        for app in apps:
            for model in app["models"]:
                model_admin = self._registry.get(model["model"])
                section = getattr(model_admin, "admin_section", CONTROL)
                sections[section].append({**model, "name": f"{model['name']}"})
        return [
            {
                "name": name,
                "app_label": name.lower(),
                "app_url": f"#{name.lower()}",
                "has_module_perms": True,
                "hint": SECTION_HINTS[name],
                "models": sorted(models, key=lambda m: m["name"]),
            }
            for name, models in sections.items()
        ]
