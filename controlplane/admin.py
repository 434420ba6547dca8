from __future__ import annotations

from contextlib import suppress
from typing import Any
from weakref import WeakKeyDictionary

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected
from django.contrib.admin.utils import unquote
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.core.exceptions import PermissionDenied
from django.db.models import ManyToManyField, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse

from controlplane import (
    admin_chat_accounts,  # noqa: F401  (registers ChatAccountAdmin)
    admin_integrations,  # noqa: F401  (registers IntegrationAdmin)
)
from controlplane.admin_history import AuditedObjectTypeFilter, AuditHistoryMixin
from controlplane.admin_keys import KeyedFieldsMixin
from controlplane.admin_site import CONTROL, OBSERVABILITY
from controlplane.admin_values import money_html
from controlplane.approvals import ApprovalError, decide_approval
from controlplane.chat_channel import BOT_KINDS, BadTarget, validate_channel_target
from controlplane.models import (
    Approval,
    AuditEvent,
    ChatMessage,
    DeliveryAttempt,
    FeatureToggle,
    NotificationChannel,
    NotificationDelivery,
    ToggleLocked,
)
from controlplane.tiers import TIER_GROUPS, StaffRequest


class SecretShownOnceAdmin(admin.ModelAdmin):
    """A model admin whose add form issues a secret (a service key, a worker token):
    the page answering the POST shows it, once. Not a message on the next page:
    Django's messages travel in a cookie, signed but not encrypted."""

    shown_once_label = "Secret"
    # How to use the secret, shown under it; formatted with the new object as `obj`.
    shown_once_usage = ""

    _issued: WeakKeyDictionary[HttpRequest, str] = WeakKeyDictionary()

    def show_secret_once(self, request: HttpRequest, raw: str) -> None:
        """Show `raw` in the response to this request (call it from `save_model`)."""
        self._issued[request] = raw

    def response_add(
        self, request: HttpRequest, obj: Any, post_url_continue: str | None = None
    ) -> HttpResponse:
        raw = self._issued.pop(request, None)
        if raw is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "title": f"{self.shown_once_label} for {obj}",
            "subtitle": None,
            "opts": self.opts,
            "object": obj,
            "secret": raw,
            "shown_once_label": self.shown_once_label,
            "shown_once_usage": self.shown_once_usage.format(obj=obj),
        }
        # The admin site's never_cache makes it no-store, as every admin page.
        return TemplateResponse(request, "admin/secret_shown_once.html", context)


class ReadOnlyAdmin(admin.ModelAdmin):
    """History and decisions: visible to every tier, changed by nobody through the admin."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    admin_section = OBSERVABILITY
    list_display = ["at", "actor_label", "action", "object_repr", "client_address"]
    list_filter = ["action", AuditedObjectTypeFilter]
    search_fields = ["actor_label", "action", "object_repr", "object_id"]
    list_select_related = ["content_type"]
    date_hierarchy = "at"


@admin.register(FeatureToggle)
class FeatureToggleAdmin(AuditHistoryMixin, admin.ModelAdmin):
    admin_section = CONTROL
    list_display = ["key", "enabled", "locked", "critical", "description", "updated_at"]
    list_filter = ["enabled", "locked", "critical"]
    search_fields = ["key", "description"]
    actions = ["turn_on", "turn_off", "delete_selected"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["key", "enabled", "locked", "critical", "description"] if obj and obj.locked else []

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_delete_permission(request, obj) and not (obj and obj.locked)

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # Django's own view answers a locked toggle with a bare 403; someone allowed to
        # delete toggles is told why instead, and the attempt is audited.
        toggle = self.get_object(request, unquote(object_id))
        if (
            toggle is None
            or not toggle.locked
            or not super().has_delete_permission(request, toggle)
        ):
            return super().delete_view(request, object_id, extra_context)
        self._refuse_deleting(request, toggle, attempted=request.method == "POST")
        return redirect("admin:controlplane_featuretoggle_change", toggle.pk)

    @admin.action(description="Delete selected feature toggles", permissions=["delete"])
    def delete_selected(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        locked = [toggle for toggle in queryset if toggle.locked]
        for toggle in locked:
            self._refuse_deleting(request, toggle, attempted=True)
        return None if locked else delete_selected(self, request, queryset)

    def _refuse_deleting(
        self, request: HttpRequest, toggle: FeatureToggle, *, attempted: bool
    ) -> None:
        if attempted:
            with suppress(ToggleLocked):
                toggle.refuse_if_locked()  # writes the refusal's audit event
        self.message_user(request, ToggleLocked(toggle.key).message, messages.ERROR)

    def _set_enabled(self, request: HttpRequest, queryset: QuerySet, enabled: bool) -> None:
        changed = 0
        for toggle in queryset:
            toggle.enabled = enabled
            try:
                toggle.save()
                changed += 1
            except ToggleLocked as exc:
                self.message_user(request, exc.message, messages.ERROR)
        if changed:
            self.message_user(request, f"{changed} toggle(s) turned {'on' if enabled else 'off'}.")

    @admin.action(description="Turn selected toggles on", permissions=["change"])
    def turn_on(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_enabled(request, queryset, True)

    @admin.action(description="Turn selected toggles off", permissions=["change"])
    def turn_off(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_enabled(request, queryset, False)


@admin.register(Approval)
class ApprovalAdmin(ReadOnlyAdmin):
    admin_section = CONTROL
    list_display = [
        "id",
        "action",
        "status",
        "requested_by",
        "amount_usd",
        "required_tier",
        "expires_at",
        "decided_by",
    ]
    list_filter = ["status", "action", "required_tier"]
    search_fields = ["action", "reason"]
    list_select_related = ["requested_by", "decided_by"]
    actions = ["approve", "reject"]

    @admin.display(description="Amount", ordering="amount")
    def amount_usd(self, approval: Approval) -> str:
        return money_html(approval.amount)

    def has_decide_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("controlplane.decide_approval")

    # The admin site lets only staff in: its requests carry a staff user.
    def _decide(self, request: StaffRequest, queryset: QuerySet, approve: bool) -> None:
        for approval in queryset:
            try:
                decide_approval(approval, user=request.user, approve=approve)
            except ApprovalError as exc:
                self.message_user(request, f"#{approval.pk}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"#{approval.pk} {approval.status}.")

    @admin.action(description="Approve selected requests", permissions=["decide"])
    def approve(self, request: StaffRequest, queryset: QuerySet) -> None:
        self._decide(request, queryset, True)

    @admin.action(description="Reject selected requests", permissions=["decide"])
    def reject(self, request: StaffRequest, queryset: QuerySet) -> None:
        self._decide(request, queryset, False)


class NotificationChannelForm(forms.ModelForm):
    target = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Webhook URL or email address; for a Telegram bot, the integration's "
        "name (all linked staff), or name:operators, name:owners or name:chat:CHAT_ID. "
        "Stored encrypted; leave blank to keep the current one.",
    )

    class Meta:
        model = NotificationChannel
        fields = ["name", "kind", "target", "enabled"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        target = cleaned.get("target") or ""
        if not target:
            if not self.instance.pk:
                self.add_error("target", "A new channel needs a target.")
            cleaned["target"] = self.instance.target
            return cleaned
        kind = cleaned.get("kind")
        if kind in BOT_KINDS:
            try:
                cleaned["target"] = validate_channel_target(kind, target)
            except BadTarget as exc:
                self.add_error("target", str(exc))
            return cleaned
        validator = (
            forms.EmailField() if kind == NotificationChannel.Kind.EMAIL else forms.URLField()
        )
        try:
            cleaned["target"] = validator.clean(target)
        except forms.ValidationError as exc:
            self.add_error("target", exc)
        return cleaned


@admin.register(NotificationChannel)
class NotificationChannelAdmin(AuditHistoryMixin, admin.ModelAdmin):
    admin_section = CONTROL
    form = NotificationChannelForm
    list_display = ["name", "kind", "masked_target", "enabled", "created_at"]
    list_filter = ["kind", "enabled"]
    readonly_fields = ["masked_target"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        if obj is None:
            return ("name", "kind", "target", "enabled")
        if self.has_change_permission(request, obj):
            return ("name", "kind", "masked_target", "target", "enabled")
        # A read-only view renders every field's value as text, so the target is left
        # out there and shown only masked.
        return ("name", "kind", "masked_target", "enabled")


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    fields = ["number", "at", "ok", "status_code", "error", "duration_ms"]
    readonly_fields = ["number", "at", "ok", "status_code", "error", "duration_ms"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(NotificationDelivery)
class NotificationDeliveryAdmin(ReadOnlyAdmin):
    admin_section = OBSERVABILITY
    list_display = [
        "created_at",
        "channel",
        "subject",
        "status",
        "attempts",
        "sent_at",
        "last_error",
    ]
    list_filter = ["status", "channel"]
    search_fields = ["subject", "dedupe_key"]
    list_select_related = ["channel"]
    inlines = [DeliveryAttemptInline]


@admin.register(ChatMessage)
class ChatMessageAdmin(ReadOnlyAdmin):
    """The bot's messages in Telegram and Discord chats (notifications, approval
    requests): which approval, to whom, what it shows, whether its button was used.
    The buttons' token hashes are not shown. Forgotten after
    `CHATOPS_MESSAGE_RECORD_DAYS` (`chat_channel.forget_old_messages`)."""

    admin_section = OBSERVABILITY
    list_display = [
        "sent_at",
        "integration",
        "chat_account",
        "approval",
        "delivery",
        "shown_status",
        "button_used_at",
        "edit_attempts",
    ]
    list_filter = ["integration", "shown_status"]
    list_select_related = ["integration", "chat_account", "approval", "delivery__channel"]
    search_fields = ["chat_id", "chat_account__display_name"]
    date_hierarchy = "sent_at"
    fields = [
        "integration",
        "chat_id",
        "message_id",
        "chat_account",
        "delivery",
        "approval",
        "shown_status",
        "button_used_at",
        "edit_due_at",
        "edit_attempts",
        "sent_at",
    ]


admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(Group)
class TierGroupAdmin(KeyedFieldsMixin, GroupAdmin):
    pass


@admin.register(User)
class StaffAccountAdmin(KeyedFieldsMixin, UserAdmin):
    """Accounts, changed by Owners: what someone may do is their tier, nothing else.
    No per-user permissions are offered (the tiers' backend ignores them anyway),
    only tier groups can be chosen, and only a superuser makes or changes a superuser."""

    admin_section = CONTROL
    fieldsets = (
        (None, {"fields": ("username", "password")}),
        ("Personal info", {"fields": ("first_name", "last_name", "email")}),
        ("Tier", {"fields": ("is_active", "groups", "is_superuser")}),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    filter_horizontal = ("groups",)
    list_filter = ("is_superuser", "is_active", "groups")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fields = list(super().get_readonly_fields(request, obj))
        if not request.user.is_superuser:
            fields.append("is_superuser")
        return fields

    def formfield_for_manytomany(
        self, db_field: ManyToManyField, request: HttpRequest | None = None, **kwargs: Any
    ) -> forms.ModelMultipleChoiceField | None:
        if db_field.name == "groups":
            kwargs["queryset"] = Group.objects.filter(name__in=TIER_GROUPS.values())
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A superuser's password or flags would hand its power to whoever changes
        # them: only another superuser may.
        if obj is not None and obj.is_superuser and not request.user.is_superuser:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.is_superuser and not request.user.is_superuser:
            return False
        return super().has_delete_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        # The form already shows the flag read-only to others; this refuses it
        # whichever way it arrived.
        was_superuser = bool(obj.pk and User.objects.filter(pk=obj.pk, is_superuser=True).exists())
        if obj.is_superuser and not was_superuser and not request.user.is_superuser:
            raise PermissionDenied("Only a superuser can make a superuser.")
        super().save_model(request, obj, form, change)
