"""The admin of ingest keys: an Owner issues a key for a log source (shown once, on
the page answering the form) and revokes it; both are audited. A key is never
edited or deleted: a revoked key stays, so the trail can name it."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from controlplane.admin import AuditHistoryMixin, SecretShownOnceAdmin
from controlplane.admin_keys import KeyedFieldsMixin
from controlplane.admin_site import CONTROL
from healthmon.ingest_keys import assign_secret, record_issued, revoke_key
from healthmon.models import IngestKey


@admin.register(IngestKey)
class IngestKeyAdmin(KeyedFieldsMixin, AuditHistoryMixin, SecretShownOnceAdmin):
    admin_section = CONTROL
    shown_once_label = "Ingest key"
    shown_once_usage = (
        "Services of {obj.source} push their logs to /v1/logs (OTLP/HTTP) with it, as "
        "`Authorization: Bearer <key>` or `X-Ingest-Key: <key>` "
        "(OTEL_EXPORTER_OTLP_LOGS_HEADERS=X-Ingest-Key=<key>)."
    )
    list_display = ["name", "source", "lookup", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["source", ("revoked_at", admin.EmptyFieldListFilter)]
    list_select_related = ["source"]
    search_fields = ["name", "lookup", "source__name"]
    fields = ["source", "name"]
    actions = ["revoke"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return []
        return ["source", "name", "lookup", "created_at", "last_used_at", "revoked_at"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # The issue form asks for a source and a name; a key's page shows its history.
        return self.get_readonly_fields(request, obj) or self.fields

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A key is issued or revoked; its secret and owner never change.
        return False if obj is not None else super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: IngestKey, form: Any, change: bool) -> None:
        raw = assign_secret(obj)
        super().save_model(request, obj, form, change)  # in the admin's transaction
        record_issued(obj)
        self.show_secret_once(request, raw)

    @admin.action(description="Revoke selected keys", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[IngestKey]) -> None:
        count = sum(revoke_key(key) for key in queryset.filter(revoked_at__isnull=True))
        self.message_user(request, f"{count} key(s) revoked.")

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("healthmon.change_ingestkey")
