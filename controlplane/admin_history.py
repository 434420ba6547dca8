"""The audit trail in the admin: the History link shows it instead of the admin's own
log, and the audit list is filtered by the product's own object types."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.text import capfirst

from controlplane.models import AuditEvent
from controlplane.tiers import tier_permissions


class AuditHistoryMixin:
    """The admin's History link shows the object's audit trail, with before and after,
    whichever path made each change (the admin's own log only knows admin edits)."""

    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        model_admin: Any = self
        obj = model_admin.get_object(request, unquote(object_id))
        if obj is None or not model_admin.has_view_or_change_permission(request, obj):
            raise PermissionDenied
        events = AuditEvent.objects.filter(
            content_type=ContentType.objects.get_for_model(obj), object_id=str(obj.pk)
        ).select_related("actor")[:200]
        context = {
            **model_admin.admin_site.each_context(request),
            "title": f"Change history: {obj}",
            "subtitle": None,
            "object": obj,
            "opts": model_admin.opts,
            "module_name": str(model_admin.opts.verbose_name_plural).capitalize(),
            "events": events,
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/audit_history.html", context)


class AuditedObjectTypeFilter(admin.SimpleListFilter):
    """The audit trail filtered by what was changed, among the product's own models and
    its accounts: not every content type Django knows (sessions, permissions, admin
    log entries), which no audit event is about."""

    title = "object type"
    parameter_name = "object_type"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(str(pk), label) for pk, label in product_content_types()]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value is None:
            return queryset
        if value not in {str(pk) for pk, _ in product_content_types()}:
            raise IncorrectLookupParameters(f"No object type {value!r}.")
        return queryset.filter(content_type_id=int(value))


def product_content_types() -> list[tuple[int, str]]:
    """(content type id, label) of the product apps' models (those whose AppConfig
    declares `operator_permissions`) and of accounts, by label."""
    product_apps = set(tier_permissions())
    models = [
        model
        for model in apps.get_models()
        if model._meta.app_label in product_apps and not model._meta.auto_created
    ]
    types = ContentType.objects.get_for_models(*models, get_user_model(), Group)
    return sorted(
        (
            (content_type.pk, str(capfirst(model._meta.verbose_name_plural)))
            for model, content_type in types.items()
        ),
        key=lambda choice: choice[1].lower(),
    )
