"""Linked chat accounts in the operator panel (Control): every tier sees who is
linked to which bot; nobody adds or edits a link here (a staff member links their
own from the chat), and deleting one is unlinking it, audited as such."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from controlplane.admin_site import CONTROL
from controlplane.chat_accounts import unlink_account
from controlplane.models import ChatAccount


@admin.register(ChatAccount)
class ChatAccountAdmin(admin.ModelAdmin):
    admin_section = CONTROL
    list_display = ["__str__", "user", "integration", "platform", "linked_at"]
    list_filter = ["platform", "integration"]
    list_select_related = ["user", "integration"]
    search_fields = ["display_name", "platform_user_id", "user__username"]
    readonly_fields = [
        "platform",
        "integration",
        "platform_user_id",
        "chat_id",
        "display_name",
        "user",
        "linked_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def delete_model(self, request: HttpRequest, obj: ChatAccount) -> None:
        unlink_account(obj, by=request.user, via="admin")  # type: ignore[arg-type]

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ChatAccount]) -> None:
        for account in queryset.select_related("user", "integration"):
            unlink_account(account, by=request.user, via="admin")  # type: ignore[arg-type]
