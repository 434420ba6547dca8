"""The log monitor in the operator panel.

Control: log sources (Owners add and change them, every change audited; what the
crawler and ingest write, cursor, last ingest, errors, backoff, is read-only).
Observability: fingerprints, written by ingest and moved only through
`healthmon.fingerprint_states` (resolve, ignore for 24 hours, unresolve), with
their recent sample lines.

Other parts of the log monitor have admin modules of their own (ingest keys, crawl
records, alerts), imported here.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from controlplane.admin import AuditHistoryMixin, ReadOnlyAdmin
from controlplane.admin_keys import KeyedFieldsMixin
from controlplane.admin_site import CONTROL, OBSERVABILITY
from healthmon import (
    alert_admin,  # noqa: F401  (registers alert rules and alert history)
    code_admin,  # noqa: F401  (registers repositories, scans and findings)
    crawl_admin,  # noqa: F401  (registers crawl records)
    fingerprint_states,
    ingest_key_admin,  # noqa: F401  (registers ingest keys)
)
from healthmon.fingerprint_states import STATE_PERMISSION, IgnoreFor, StateRefused
from healthmon.models import Fingerprint, LogSource, Sample


def pretty_json(value: Any) -> str:
    return format_html(
        '<pre class="json">{}</pre>', json.dumps(value, indent=2, sort_keys=True, default=str)
    )


class LogSourceForm(forms.ModelForm):
    settings = forms.JSONField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 8, "cols": 80}),
        help_text='What the kind needs, as JSON. Railway: {"project_id": "...", '
        '"environment_id": "...", "service_id": "...", "streams": ["deployment", "http"]}.',
    )

    class Meta:
        model = LogSource
        fields = ["name", "service", "kind", "integration", "settings", "enabled", "is_demo"]

    def clean_settings(self) -> dict[str, Any]:
        value = self.cleaned_data.get("settings")
        if value in (None, ""):
            return {}
        if not isinstance(value, dict):
            raise forms.ValidationError("Settings are a JSON object, e.g. {}.")
        return value


@admin.register(LogSource)
class LogSourceAdmin(KeyedFieldsMixin, AuditHistoryMixin, admin.ModelAdmin):
    admin_section = CONTROL
    form = LogSourceForm
    list_display = [
        "name",
        "service",
        "kind",
        "enabled",
        "is_demo",
        "integration",
        "last_ingest_at",
        "last_error_short",
        "backoff_until",
    ]
    list_filter = ["kind", "enabled", "is_demo"]
    search_fields = ["name", "service"]
    list_select_related = ["integration"]
    readonly_fields = [
        "settings_pretty",
        "cursor_pretty",
        "last_ingest_at",
        "last_error",
        "last_error_at",
        "backoff_until",
        "created_at",
    ]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        editable = ["name", "service", "kind", "integration", "settings", "enabled", "is_demo"]
        if not self.has_change_permission(request, obj):
            editable = [name for name in editable if name != "settings"] + ["settings_pretty"]
        return editable + [name for name in self.readonly_fields if name != "settings_pretty"]

    @admin.display(description="Settings")
    def settings_pretty(self, source: LogSource) -> str:
        return pretty_json(source.settings)

    @admin.display(description="Cursor")
    def cursor_pretty(self, source: LogSource) -> str:
        return pretty_json(source.cursor)

    @admin.display(description="Last error")
    def last_error_short(self, source: LogSource) -> str:
        return source.last_error[:80]


class SampleInline(admin.TabularInline):
    model = Sample
    fields = ["at", "level", "message", "attributes", "source"]
    readonly_fields = ["at", "level", "message", "attributes", "source"]
    ordering = ["-at"]
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Fingerprint)
class FingerprintAdmin(AuditHistoryMixin, ReadOnlyAdmin):
    """Ingest writes fingerprints; people only move their state, through the actions."""

    admin_section = OBSERVABILITY
    list_display = [
        "id",
        "service",
        "template_short",
        "level",
        "status",
        "count",
        "first_seen",
        "last_seen",
        "task_link",
    ]
    list_filter = ["status", "level", "service"]
    search_fields = ["template", "key"]
    list_select_related = ["task"]
    date_hierarchy = "last_seen"
    actions = ["resolve", "ignore_for_a_day", "unresolve"]
    inlines = [SampleInline]
    fields = [
        "service",
        "key",
        "template",
        "level",
        "status",
        "count",
        "first_seen",
        "last_seen",
        "source",
        "status_changed_at",
        "regressed_at",
        "ignored_until",
        "ignored_until_count",
        "task",
    ]

    @admin.display(description="Template", ordering="template")
    def template_short(self, fingerprint: Fingerprint) -> str:
        return fingerprint.template[:100]

    @admin.display(description="Task", ordering="task")
    def task_link(self, fingerprint: Fingerprint) -> str:
        if fingerprint.task is None:
            return "—"
        url = reverse("admin:selfheal_task_change", args=[fingerprint.task.pk])
        return format_html(
            '<a href="{}">#{} {}</a>', url, fingerprint.task.pk, fingerprint.task.status
        )

    def has_change_state_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(STATE_PERMISSION)

    def _move(self, request: HttpRequest, queryset: QuerySet[Fingerprint], to: str) -> None:
        actor = request.user if isinstance(request.user, User) else None
        moved = 0
        for fingerprint in queryset:
            try:
                if to == Fingerprint.Status.IGNORED:
                    fingerprint_states.ignore(fingerprint, IgnoreFor.parse("24h"), actor=actor)
                else:
                    fingerprint_states.move(fingerprint, to, actor=actor)
                moved += 1
            except StateRefused as refused:
                self.message_user(request, f"#{fingerprint.pk}: {refused}", messages.WARNING)
        if moved:
            self.message_user(request, f"{moved} fingerprint(s) now {to}.")

    @admin.action(description="Resolve selected fingerprints", permissions=["change_state"])
    def resolve(self, request: HttpRequest, queryset: QuerySet[Fingerprint]) -> None:
        self._move(request, queryset, Fingerprint.Status.RESOLVED)

    @admin.action(
        description="Ignore selected fingerprints for 24 hours", permissions=["change_state"]
    )
    def ignore_for_a_day(self, request: HttpRequest, queryset: QuerySet[Fingerprint]) -> None:
        self._move(request, queryset, Fingerprint.Status.IGNORED)

    @admin.action(description="Unresolve selected fingerprints", permissions=["change_state"])
    def unresolve(self, request: HttpRequest, queryset: QuerySet[Fingerprint]) -> None:
        self._move(request, queryset, Fingerprint.Status.UNRESOLVED)
