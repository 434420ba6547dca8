"""The admin's History link, showing the audit trail instead of the admin's own log."""

from __future__ import annotations

from typing import Any

from django.contrib.admin.utils import unquote
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from controlplane.models import AuditEvent


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
