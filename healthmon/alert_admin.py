"""Alerts in the operator panel: rules in Control (Owners change them, every change
audited, bad parameters refused with the reason), episodes in Observability
(history: read-only for everyone, each with the deliveries that told it)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, Max, Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from controlplane.admin import AuditHistoryMixin, ReadOnlyAdmin
from controlplane.admin_keys import KeyedFieldsMixin
from controlplane.admin_site import CONTROL, OBSERVABILITY
from healthmon.models import Alert, AlertRule


@admin.register(AlertRule)
class AlertRuleAdmin(KeyedFieldsMixin, AuditHistoryMixin, admin.ModelAdmin):
    """Owners change rules (they hold every health permission); the others see them."""

    admin_section = CONTROL
    list_display = [
        "name",
        "kind",
        "service_or_all",
        "min_level",
        "enabled",
        "open_episodes",
        "last_opened",
    ]
    list_filter = ["enabled", "kind"]
    search_fields = ["name", "service"]
    filter_horizontal = ["channels"]
    fieldsets = [
        (None, {"fields": ["name", "kind", "enabled", "service", "min_level", "channels"]}),
        ("New fingerprint and regression", {"fields": ["quiet_minutes"]}),
        ("Spike", {"fields": ["multiplier", "floor", "window_minutes", "baseline_minutes"]}),
        ("Sustained 5xx", {"fields": ["threshold", "minutes", "min_requests"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[AlertRule]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                open_count=Count("alerts", filter=Q(alerts__cleared_at__isnull=True)),
                last_opened_at=Max("alerts__opened_at"),
            )
        )

    @admin.display(description="Service", ordering="service")
    def service_or_all(self, rule: AlertRule) -> str:
        return rule.service or "every service"

    @admin.display(description="Open", ordering="open_count")
    def open_episodes(self, rule: AlertRule) -> int:
        return getattr(rule, "open_count", 0)

    @admin.display(description="Last opened", ordering="last_opened_at")
    def last_opened(self, rule: AlertRule) -> Any:
        return getattr(rule, "last_opened_at", None) or "never"


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    admin_section = OBSERVABILITY
    list_display = ["opened_at", "rule", "service", "summary", "cleared_at", "cleared_reason"]
    list_filter = [
        ("cleared_at", admin.EmptyFieldListFilter),
        "kind",
        "rule",
        "service",
    ]
    search_fields = ["summary", "service", "fingerprint__template"]
    list_select_related = ["rule", "fingerprint"]
    date_hierarchy = "opened_at"
    fields = readonly_fields = (
        "rule",
        "kind",
        "service",
        "fingerprint_link",
        "summary",
        "since",
        "opened_at",
        "cleared_at",
        "cleared_reason",
        "details",
        "told_by",
    )

    @admin.display(description="Fingerprint")
    def fingerprint_link(self, alert: Alert) -> str:
        if alert.fingerprint_id is None:
            return "—"
        return format_html(
            '<a href="/health/fingerprints/{}/">{}</a>', alert.fingerprint_id, alert.fingerprint
        )

    @admin.display(description="Messages")
    def told_by(self, alert: Alert) -> str:
        deliveries = alert.deliveries().select_related("channel")
        if not deliveries:
            return "none (no enabled channel, or notifications off)"
        return format_html_join(
            "",
            '<div><a href="{}">{}</a> to {}: {}</div>',
            (
                (
                    reverse("admin:controlplane_notificationdelivery_change", args=[d.pk]),
                    d.subject,
                    d.channel,
                    d.status,
                )
                for d in deliveries
            ),
        )
