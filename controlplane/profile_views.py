"""A staff member's profile page: their chat accounts (Telegram, Discord),
a one-time code to link another, and an Unlink button for each."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.db.models import QuerySet
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from controlplane.chat_accounts import issue_link_code, unlink_account
from controlplane.models import ChatAccount, Integration
from controlplane.tiers import StaffRequest, staff_required


def _chat_accounts_for_user(request: StaffRequest) -> QuerySet[ChatAccount]:
    return ChatAccount.objects.filter(user=request.user).select_related("integration")


def _render(request: StaffRequest, link_code: str = "") -> HttpResponse:
    bots = Integration.objects.filter(
        kind__in=[Integration.Kind.TELEGRAM, Integration.Kind.DISCORD], enabled=True
    )
    return render(
        request,
        "controlplane/profile.html",
        {
            "chat_accounts": _chat_accounts_for_user(request),
            "bots": bots,
            "link_code": link_code,
            "link_code_minutes": settings.CHATOPS_LINK_CODE_MINUTES,
        },
    )


@never_cache
@require_GET
@staff_required
def profile(request: StaffRequest) -> HttpResponse:
    return _render(request)


@never_cache
@require_POST
@staff_required
def new_link_code(request: StaffRequest) -> HttpResponse:
    # Rendered, not redirected: the code is shown once and kept nowhere but its hash.
    return _render(request, link_code=issue_link_code(request.user))


@require_POST
@staff_required
def unlink(request: StaffRequest, account_id: int) -> HttpResponse:
    account = get_object_or_404(_chat_accounts_for_user(request), pk=account_id)
    unlink_account(account, by=request.user, via="profile")
    messages.success(request, f"{account} is unlinked: it no longer acts for you.")
    return redirect("profile")
