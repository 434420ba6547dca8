"""Integrations in the operator panel (Control): Owners add and change them, every
tier sees them; secrets are written, never read back, and shown only masked.

"Test connection" (a button on the change page, and an action on the list) runs the
kind's connection test, shows its result and puts it in the audit trail."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.decorators import method_decorator
from django.utils.formats import localize
from django.utils.timezone import localtime
from django.views.decorators.debug import sensitive_post_parameters

from controlplane import audit
from controlplane.admin_history import AuditHistoryMixin
from controlplane.admin_site import CONTROL
from controlplane.integration_forms import input_names, integration_form
from controlplane.integrations import (
    IntegrationKind,
    declared_kinds,
    kind_of,
    masked_secrets,
    run_connection_test,
)
from controlplane.models import Integration


@admin.register(Integration)
class IntegrationAdmin(AuditHistoryMixin, admin.ModelAdmin):
    admin_section = CONTROL
    list_display = [
        "name",
        "kind",
        "enabled",
        "masked_credentials",
        "last_test_ok",
        "last_test",
        "last_error_shown",
    ]
    list_filter = ["kind", "enabled", "last_test_ok"]
    search_fields = ["name"]
    actions = ["test_connection", "register_telegram_webhook", "register_discord_commands"]

    # Declared kinds' fields

    def _declaration(self, request: HttpRequest, obj: Integration | None) -> IntegrationKind:
        if obj is not None:
            declaration = kind_of(obj.kind)
        else:
            # The add page's kind comes with its URL (?kind=), as its fields depend on it.
            kind = request.GET.get("kind") or declared_kinds()[0].kind
            declaration = kind_of(kind)
        if declaration is None:
            raise UnknownKind(obj.kind if obj is not None else request.GET.get("kind", ""))
        return declaration

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        declaration = self._declaration(request, obj)
        secret_inputs, setting_inputs = input_names(declaration)
        if obj is None:
            return [
                (None, {"fields": ["name", "kind", "enabled"]}),
                ("Credentials", {"fields": secret_inputs}),
                ("Settings", {"fields": setting_inputs}),
            ]
        status = ("Status", {"fields": ["last_test", "last_error_shown", "created_at"]})
        if not self.has_change_permission(request, obj):
            # A read-only page renders every field's value as text: the secrets are
            # left out there and shown only masked.
            return [
                (None, {"fields": ["name", "kind", "enabled"]}),
                ("Credentials", {"fields": ["masked_credentials"]}),
                ("Settings", {"fields": ["settings_shown"]}),
                status,
            ]
        return [
            (None, {"fields": ["name", "kind", "enabled"]}),
            ("Credentials", {"fields": ["masked_credentials", *secret_inputs]}),
            ("Settings", {"fields": setting_inputs}),
            status,
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        shown = ["masked_credentials", "settings_shown", "last_test", "last_error_shown"]
        return [*shown, "created_at"] + (["kind"] if obj is not None else [])

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        kwargs["form"] = integration_form(self._declaration(request, obj))
        return super().get_form(request, obj, change, **kwargs)

    @method_decorator(sensitive_post_parameters())
    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # Hidden from error reports: a failure while saving must not mail the token.
        if object_id is None and "kind" not in request.GET and len(declared_kinds()) > 1:
            return self._choose_kind(request)
        try:
            if object_id is None:
                self._declaration(request, None)
        except UnknownKind as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return redirect("admin:controlplane_integration_changelist")
        obj = self.get_object(request, unquote(object_id)) if object_id else None
        extra_context = {
            **(extra_context or {}),
            "can_test_connection": obj is not None and self.has_change_permission(request, obj),
        }
        return super().changeform_view(request, object_id, form_url, extra_context)

    def _choose_kind(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": "Add integration: choose its kind",
            "subtitle": None,
            "opts": self.opts,
            "kinds": declared_kinds(),
        }
        return TemplateResponse(request, "admin/controlplane/integration/choose_kind.html", context)

    # What the list and the read-only page show

    @admin.display(description="Credentials")
    def masked_credentials(self, integration: Integration) -> str:
        return masked_secrets(integration) or "none stored"

    @admin.display(description="Settings")
    def settings_shown(self, integration: Integration) -> str:
        declaration = kind_of(integration.kind)
        labels = {f.name: f.label for f in declaration.settings} if declaration else {}
        values = integration.settings or {}
        return ", ".join(f"{labels.get(k, k)}: {v}" for k, v in sorted(values.items())) or "-"

    @admin.display(description="Last test", ordering="last_tested_at")
    def last_test(self, integration: Integration) -> str:
        if integration.last_tested_at is None:
            return "never tested"
        outcome = "ok" if integration.last_test_ok else "failed"
        at = localize(localtime(integration.last_tested_at))
        return f"{outcome} at {at}: {integration.last_test_message}"

    @admin.display(description="Last error", ordering="last_error_at")
    def last_error_shown(self, integration: Integration) -> str:
        if not integration.last_error:
            return "-"
        at = localize(localtime(integration.last_error_at)) if integration.last_error_at else ""
        return f"{integration.last_error} ({at})" if at else integration.last_error

    # Test connection

    def get_urls(self) -> list[URLPattern]:
        test = path(
            "<path:object_id>/test-connection/",
            self.admin_site.admin_view(self.test_connection_view),
            name="controlplane_integration_test_connection",
        )
        return [test, *super().get_urls()]

    def test_connection_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        integration = self.get_object(request, unquote(object_id))
        if integration is None:
            self.message_user(request, "That integration does not exist.", messages.WARNING)
            return redirect("admin:controlplane_integration_changelist")
        if not self.has_change_permission(request, integration):
            self.message_user(
                request, "Your tier does not allow testing integrations.", messages.ERROR
            )
        else:
            self._test(request, integration)
        return redirect(reverse("admin:controlplane_integration_change", args=[integration.pk]))

    @admin.action(description="Test connection of selected integrations", permissions=["change"])
    def test_connection(self, request: HttpRequest, queryset: QuerySet[Integration]) -> None:
        for integration in queryset:
            self._test(request, integration)

    @admin.action(
        description="Register the Telegram webhook of selected integrations", permissions=["change"]
    )
    def register_telegram_webhook(
        self, request: HttpRequest, queryset: QuerySet[Integration]
    ) -> None:
        # Imported here: the kinds are declared in the order AppConfig.ready() gives.
        from controlplane.telegram import TelegramError
        from controlplane.telegram_integration import WebhookNotPossible, register_webhook

        for integration in queryset:
            try:
                message = register_webhook(integration)
            except (WebhookNotPossible, TelegramError) as exc:
                self.message_user(request, f"{integration.name}: {exc}", messages.ERROR)
            else:
                audit.record("integration.webhook_set", integration)
                self.message_user(request, message, messages.SUCCESS)

    @admin.action(
        description="Register the Discord slash commands of selected integrations",
        permissions=["change"],
    )
    def register_discord_commands(
        self, request: HttpRequest, queryset: QuerySet[Integration]
    ) -> None:
        from controlplane.discord import DiscordError
        from controlplane.discord_integration import register_commands

        for integration in queryset:
            try:
                message = register_commands(integration)
            except DiscordError as exc:
                self.message_user(request, f"{integration.name}: {exc}", messages.ERROR)
            else:
                audit.record("integration.commands_registered", integration)
                self.message_user(request, message, messages.SUCCESS)

    def _test(self, request: HttpRequest, integration: Integration) -> None:
        result = run_connection_test(integration)
        if result.ok:
            self.message_user(request, f"{integration.name}: {result.message}", messages.SUCCESS)
        else:
            self.message_user(
                request, f"{integration.name}: failed: {result.message}", messages.ERROR
            )


class UnknownKind(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(f"There is no integration kind '{kind[:50]}'.")
