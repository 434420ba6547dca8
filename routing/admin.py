from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from controlplane import audit
from controlplane.admin import AuditHistoryMixin, ReadOnlyAdmin, SecretShownOnceAdmin
from controlplane.admin_keys import KeyedFieldsMixin
from controlplane.admin_site import CONTROL, INTELLIGENCE, OBSERVABILITY
from routing.models import (
    AIModel,
    Budget,
    BudgetDay,
    DailySpend,
    OperationLog,
    Policy,
    Provider,
    Recommendation,
    Route,
    RouteFallback,
    ServiceKey,
)


class ProviderForm(forms.ModelForm):
    api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Stored encrypted; leave blank to keep the current key.",
    )

    class Meta:
        model = Provider
        fields = ["name", "kind", "base_url", "api_key", "enabled", "timeout_seconds"]

    def clean_api_key(self) -> str:
        return self.cleaned_data["api_key"] or (self.instance.api_key if self.instance.pk else "")


@admin.register(Provider)
class ProviderAdmin(AuditHistoryMixin, admin.ModelAdmin):
    admin_section = CONTROL
    form = ProviderForm
    list_display = ["name", "kind", "base_url", "masked_api_key", "enabled"]
    list_filter = ["kind", "enabled"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = ["name", "kind", "base_url", "api_key", "enabled", "timeout_seconds"]
        if obj is not None and not self.has_change_permission(request, obj):
            # Read-only pages render values as text: show the key masked only.
            return [f if f != "api_key" else "masked_api_key" for f in fields]
        return fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["masked_api_key"]


@admin.register(AIModel)
class AIModelAdmin(AuditHistoryMixin, admin.ModelAdmin):
    admin_section = INTELLIGENCE
    list_display = [
        "model_id",
        "provider",
        "context_length",
        "price_prompt",
        "price_completion",
        "price_flag",
        "supports_tools",
        "active",
        "source",
    ]
    list_filter = ["provider", "active", "supports_tools", "source"]
    search_fields = ["model_id", "name"]
    list_select_related = ["provider"]

    @admin.display(description="Price", boolean=False)
    def price_flag(self, obj: AIModel) -> str:
        return "MISSING" if obj.price_missing else "ok"


@admin.register(Policy)
class PolicyAdmin(AuditHistoryMixin, admin.ModelAdmin):
    admin_section = CONTROL
    list_display = [
        "mode",
        "max_price_per_1k",
        "max_context",
        "max_iterations",
        "max_cost_per_run",
        "max_wall_clock_seconds",
    ]


class RouteFallbackInline(KeyedFieldsMixin, admin.TabularInline):
    model = RouteFallback
    extra = 1
    ordering = ["position"]
    autocomplete_fields = ["model"]


@admin.register(Route)
class RouteAdmin(KeyedFieldsMixin, AuditHistoryMixin, admin.ModelAdmin):
    admin_section = CONTROL
    list_display = [
        "operation",
        "primary_model",
        "policy",
        "spends_money",
        "irreversible",
        "approval_threshold",
        "ab_model",
        "ab_percent",
        "api",
    ]
    list_select_related = ["primary_model", "policy", "ab_model"]
    autocomplete_fields = ["primary_model", "ab_model"]
    inlines = [RouteFallbackInline]
    exclude = ["fallbacks"]
    search_fields = ["operation"]

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        # Fallback rows are not audited models, so the route records their change
        # as its own, like any other field: the models in order, before and after.
        route = form.instance
        before = _fallback_ids(route) if change else []
        super().save_related(request, form, formsets, change)
        after = _fallback_ids(route)
        if before != after:
            audit.record(
                "route.changed", route, before={"fallbacks": before}, after={"fallbacks": after}
            )


def _fallback_ids(route: Route) -> list[int]:
    return list(route.fallback_links.order_by("position", "pk").values_list("model_id", flat=True))


@admin.register(Budget)
class BudgetAdmin(AuditHistoryMixin, admin.ModelAdmin):
    admin_section = CONTROL
    list_display = ["__str__", "scope", "daily_limit", "enabled"]
    list_filter = ["scope", "enabled"]
    list_select_related = ["user"]


@admin.register(BudgetDay)
class BudgetDayAdmin(ReadOnlyAdmin):
    admin_section = OBSERVABILITY
    list_display = ["day", "budget", "limit", "spent", "reserved"]
    list_filter = ["day"]
    list_select_related = ["budget__user"]


@admin.register(ServiceKey)
class ServiceKeyAdmin(AuditHistoryMixin, SecretShownOnceAdmin):
    admin_section = CONTROL
    shown_once_label = "Key"
    shown_once_usage = "{obj.service} sends it to the gateway as `Authorization: Bearer <key>`."
    list_display = [
        "service",
        "name",
        "lookup",
        "default_operation",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    list_filter = ["service"]
    fields = ["name", "service", "default_operation"]
    actions = ["revoke"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A key is issued or revoked; its secret and identity never change.
        return False if obj is not None else super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoked keys stay, so the log can name them

    def save_model(self, request: HttpRequest, obj: ServiceKey, form: Any, change: bool) -> None:
        raw = obj.assign_secret()
        obj.created_by = request.user  # type: ignore[assignment]  # staff only here
        super().save_model(request, obj, form, change)
        self.show_secret_once(request, raw)

    @admin.action(description="Revoke selected keys", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = 0
        for key in queryset.filter(revoked_at__isnull=True):
            key.revoke()
            count += 1
        self.message_user(request, f"{count} key(s) revoked.")

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("routing.change_servicekey")


@admin.register(OperationLog)
class OperationLogAdmin(ReadOnlyAdmin):
    admin_section = OBSERVABILITY
    list_display = [
        "at",
        "operation",
        "mode",
        "service",
        "user",
        "model_used",
        "status",
        "cost",
        "latency_ms",
        "fallback_used",
    ]
    list_filter = ["status", "operation", "mode", "cost_source", "fallback_used"]
    search_fields = ["request_id", "model_used", "model_requested", "error"]
    list_select_related = ["user"]
    date_hierarchy = "at"


@admin.register(DailySpend)
class DailySpendAdmin(ReadOnlyAdmin):
    admin_section = OBSERVABILITY
    list_display = [
        "day",
        "operation",
        "model",
        "service",
        "calls",
        "errors",
        "cost",
        "latency_p50_ms",
        "latency_p95_ms",
    ]
    list_filter = ["day", "operation"]


@admin.register(Recommendation)
class RecommendationAdmin(ReadOnlyAdmin):
    admin_section = INTELLIGENCE
    list_display = [
        "created_at",
        "kind",
        "operation",
        "title",
        "estimated_monthly_saving",
        "dismissed_at",
    ]
    list_filter = ["kind"]
    actions = ["dismiss"]

    def has_dismiss_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("routing.dismiss_recommendation")

    @admin.action(description="Dismiss selected recommendations", permissions=["dismiss"])
    def dismiss(self, request: HttpRequest, queryset: QuerySet) -> None:
        queryset.filter(dismissed_at__isnull=True).update(dismissed_at=timezone.now())
