from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import Count, QuerySet, Sum
from django.db.models.aggregates import Aggregate
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from controlplane import audit
from controlplane.admin import AuditHistoryMixin, ReadOnlyAdmin, SecretShownOnceAdmin
from controlplane.admin_keys import KeyedFieldsMixin
from controlplane.admin_site import CONTROL, INTELLIGENCE, OBSERVABILITY
from controlplane.admin_values import (
    PER_MILLION_CHARACTERS,
    PER_MILLION_TOKENS,
    MoneyUnit,
    money_text,
)
from controlplane.money import MoneySum
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
from routing.models.catalog import KIND_PRICES, CallKind


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
        "kind",
        "context_length",
        "price_prompt",
        "price_completion",
        "unit_prices",
        "price_flag",
        "supports_tools",
        "active",
        "source",
    ]
    list_filter = ["kind", "provider", "active", "supports_tools", "source"]
    search_fields = ["model_id", "name"]
    list_select_related = ["provider"]
    # Stored per token (as OpenRouter quotes them), shown per 1M tokens as people compare.
    money_units = {
        "price_prompt": PER_MILLION_TOKENS,
        "price_completion": PER_MILLION_TOKENS,
        "price_cache_read": PER_MILLION_TOKENS,
        "price_cache_write": PER_MILLION_TOKENS,
        "price_reasoning": PER_MILLION_TOKENS,
        "price_request": MoneyUnit("request"),
        "price_image": MoneyUnit("image"),
        "price_audio_second": MoneyUnit("second"),
        "price_video_second": MoneyUnit("second"),
        "price_character": PER_MILLION_CHARACTERS,
    }
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "provider",
                    "model_id",
                    "name",
                    "kind",
                    "context_length",
                    "supports_tools",
                    "capabilities",
                    "active",
                    "source",
                ]
            },
        ),
        (
            "Prices per token",
            {
                "fields": [
                    "price_prompt",
                    "price_completion",
                    "price_cache_read",
                    "price_cache_write",
                    "price_reasoning",
                ],
                "description": (
                    "USD per token (lists and read-only pages show them per 1M tokens). "
                    "Embeddings are priced at the prompt price."
                ),
            },
        ),
        (
            "Prices per unit",
            {
                "fields": [
                    "price_request",
                    "price_image",
                    "price_audio_second",
                    "price_video_second",
                    "price_character",
                ],
                "description": (
                    "USD per request, per input image, per second of input audio or video, "
                    "per character spoken. Empty is unknown: the model is not routed to for "
                    "a call or a part priced in that unit, never priced at zero."
                ),
            },
        ),
    ]

    @admin.display(description="Unit prices")
    def unit_prices(self, obj: AIModel) -> str:
        listed = [
            f"{label} {money_text(getattr(obj, name), self.money_units[name])}"
            for label, name in (
                ("image", "price_image"),
                ("audio", "price_audio_second"),
                ("video", "price_video_second"),
                ("speech", "price_character"),
            )
            if getattr(obj, name) is not None
        ]
        return ", ".join(listed) or "—"

    @admin.display(description="Price")
    def price_flag(self, obj: AIModel) -> str:
        """ "ok", or which of the prices its kind is charged by are missing."""
        if not obj.price_missing:
            return "ok"
        missing = [
            name.removeprefix("price_").replace("_", " ")
            for name in KIND_PRICES[obj.kind]
            if getattr(obj, name) is None
        ]
        return f"MISSING: {', '.join(missing)}"


@admin.register(Policy)
class PolicyAdmin(AuditHistoryMixin, admin.ModelAdmin):
    admin_section = CONTROL
    money_units = {"max_price_per_1k": MoneyUnit("1k tokens")}
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


def spend_by_kind(rows: QuerySet, calls: Aggregate) -> list[dict[str, Any]]:
    """Cost and calls of `rows` (the log or its daily rollup) per operation kind."""
    labels = dict(CallKind.choices)
    return [
        {**row, "label": labels.get(row["kind"], row["kind"])}
        for row in rows.order_by()
        .values("kind")
        .annotate(cost=MoneySum("cost"), calls=calls)
        .order_by("-cost", "kind")
    ]


SPEND_BY_KIND_LIST = "admin/routing/spend_by_kind_change_list.html"


class SpendByKindMixin:
    """A list of spend (the log, the daily rollup) opens with what the rows it lists
    cost per operation kind, so a filter (a day, an operation, a service) shows at once
    what chat, embeddings, transcription and speech cost within it."""

    calls_aggregate: Aggregate

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        response = super().changelist_view(request, extra_context)  # type: ignore[misc]
        context = getattr(response, "context_data", None)
        if context is not None and "cl" in context:
            context["spend_by_kind"] = spend_by_kind(context["cl"].queryset, self.calls_aggregate)
        return response


@admin.register(OperationLog)
class OperationLogAdmin(SpendByKindMixin, ReadOnlyAdmin):
    admin_section = OBSERVABILITY
    # Mode and fallback are filters and on each call's page: the list fits 1,440 px.
    list_display = [
        "at",
        "operation",
        "kind",
        "service",
        "user",
        "model_used",
        "status",
        "units",
        "cost",
        "latency_ms",
    ]
    list_filter = ["kind", "status", "operation", "mode", "cost_source", "fallback_used"]
    search_fields = ["request_id", "model_used", "model_requested", "error"]
    list_select_related = ["user"]
    date_hierarchy = "at"
    calls_aggregate = Count("pk")
    change_list_template = SPEND_BY_KIND_LIST

    @admin.display(description="Units")
    def units(self, row: OperationLog) -> str:
        """What the call was measured in: tokens, and the images, seconds and
        characters it was priced by besides."""
        parts = [f"{row.prompt_tokens}+{row.completion_tokens} tokens"]
        if row.images:
            parts.append(f"{row.images} image{'s' if row.images != 1 else ''}")
        if row.audio_seconds:
            parts.append(f"{row.audio_seconds.normalize():f} s audio")
        if row.video_seconds:
            parts.append(f"{row.video_seconds.normalize():f} s video")
        if row.characters:
            parts.append(f"{row.characters} characters")
        return ", ".join(parts)


@admin.register(DailySpend)
class DailySpendAdmin(SpendByKindMixin, ReadOnlyAdmin):
    admin_section = OBSERVABILITY
    calls_aggregate = Sum("calls")
    change_list_template = SPEND_BY_KIND_LIST
    list_display = [
        "day",
        "operation",
        "kind",
        "model",
        "service",
        "calls",
        "errors",
        "cost",
        "latency_p50_ms",
        "latency_p95_ms",
    ]
    list_filter = ["day", "kind", "operation"]


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
