from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import F
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.templatetags.static import static
from django.urls import reverse
from django.utils.cache import patch_cache_control
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST, require_safe
from django_htmx.http import HttpResponseClientRedirect

from controlplane.approval_subjects import DecidedApproval, subject_link
from controlplane.approvals import ApprovalError, decide_approval
from controlplane.dashboard import home_context
from controlplane.forms import DecisionForm, ToggleChangeRequestForm, ToggleSwitchForm
from controlplane.health import probe_all
from controlplane.home.cards import render_page_cards
from controlplane.models import Approval, FeatureToggle
from controlplane.tiers import (
    StaffRequest,
    is_staff_member,
    permission_required_for_staff,
    staff_required,
)
from controlplane.toggle_changes import ToggleNotSwitched, request_toggle_change, switch_toggle


@require_GET
@staff_required
def home(request: StaffRequest) -> HttpResponse:
    cards = render_page_cards(request, request.user)
    return render(request, "controlplane/home.html", {"cards": cards})


@require_GET
@staff_required
def approvals(request: StaffRequest) -> HttpResponse:
    recent = (
        Approval.objects.exclude(status=Approval.Status.PENDING)
        .select_related("requested_by", "decided_by", "content_type")
        .prefetch_related("subject")
        .order_by(F("decided_at").desc(nulls_last=True), "-id")[:25]
    )
    decisions = [DecidedApproval(approval, subject_link(approval)) for approval in recent]
    return render(
        request,
        "controlplane/approvals.html",
        {**home_context(request.user), "recent_decisions": decisions, "form": DecisionForm()},
    )


@require_POST
@permission_required_for_staff("controlplane.decide_approval")
def decide(request: StaffRequest, approval_id: int) -> HttpResponse:
    approval = get_object_or_404(Approval, pk=approval_id)
    form = DecisionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose approve or reject.")
        return _to_approvals(request)
    try:
        decide_approval(
            approval,
            user=request.user,
            approve=form.cleaned_data["decision"] == "approve",
            note=form.cleaned_data["note"],
        )
    except ApprovalError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Approval #{approval.pk} {form.cleaned_data['decision']}d.")
    return _to_approvals(request)


def _to_approvals(request: StaffRequest) -> HttpResponse:
    """Approvals, with the outcome's message; htmx (a row's form on Home or Approvals)
    is told to navigate there, or it would swap the whole page into the form."""
    url = reverse("approvals")
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


@staff_required
def toggles(request: StaffRequest) -> HttpResponse:
    form = ToggleChangeRequestForm()
    if request.method == "POST":
        if not request.user.has_perm("controlplane.request_approval"):
            raise PermissionDenied("Observers cannot request changes.")
        form = ToggleChangeRequestForm(request.POST)
        if form.is_valid():
            toggle = get_object_or_404(FeatureToggle, key=form.cleaned_data["key"])
            try:
                approval = request_toggle_change(
                    toggle,
                    enabled=form.cleaned_data["enabled"],
                    user=request.user,
                    reason=form.cleaned_data["reason"],
                )
            except ApprovalError as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(
                    request, f"Requested as approval #{approval.pk}; an Owner decides."
                )
                return redirect("toggles")
    return _toggles_page(request, request_form=form, focus=request.GET.get("toggle", ""))


@require_POST
@permission_required_for_staff("controlplane.change_featuretoggle")
def switch(request: StaffRequest) -> HttpResponse:
    """An Owner switches one toggle from its row, saying why (audited with the change)."""
    form = ToggleSwitchForm(request.POST)
    if form.is_valid():
        key = form.cleaned_data["key"]
        try:
            switch_toggle(
                key,
                enabled=form.cleaned_data["enabled"],
                user=request.user,
                reason=form.cleaned_data["reason"],
            )
        except ToggleNotSwitched as exc:
            form.add_error(None, str(exc))
        else:
            state = "on" if form.cleaned_data["enabled"] else "off"
            messages.success(request, f"'{key}' switched {state}.")
            return redirect(f"{reverse('toggles')}#toggle-{key}")
    return _toggles_page(request, switch_form=form, focus=str(form.data.get("key", "")))


def _toggles_page(
    request: StaffRequest,
    *,
    request_form: ToggleChangeRequestForm | None = None,
    switch_form: ToggleSwitchForm | None = None,
    focus: str = "",
) -> HttpResponse:
    """The Toggles page; `focus` is the toggle whose switch is open (a next action's
    link, or a switch that was refused), with the refused form's errors beside it."""
    request_form = request_form or ToggleChangeRequestForm()
    failed = switch_form is not None and bool(switch_form.errors)
    return render(
        request,
        "controlplane/toggles.html",
        {
            "toggles": FeatureToggle.objects.all(),
            "form": request_form,
            "switch_form": switch_form,
            "focus": focus,
        },
        status=400 if request_form.errors or failed else 200,
    )


def login_locked_out(
    request: HttpRequest, original_response: HttpResponse | None, credentials: Any
) -> HttpResponse:
    """django-axes' answer to a login while locked out (AXES_LOCKOUT_CALLABLE): a page
    saying why and for how long, which names no account (it would confirm one exists)."""
    context = {
        "failure_limit": settings.AXES_FAILURE_LIMIT,
        "lockout_minutes": int(settings.AXES_COOLOFF_TIME.total_seconds() // 60),
    }
    return render(request, "registration/locked_out.html", context, status=429)


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    probes = probe_all()
    healthy = all(p.ok for p in probes)
    # Load balancers call this anonymously: they get up or down per part. Error
    # text (hosts, ports, driver messages) is for staff only.
    detailed = is_staff_member(request.user)
    return JsonResponse(
        {
            "status": "ok" if healthy else "down",
            **{p.name: p.as_dict() if detailed else {"ok": p.ok} for p in probes},
        },
        status=200 if healthy else 503,
    )


@require_safe
def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers ask for /favicon.ico where a page names no icon (the admin's pages, a
    JSON answer): it is the static one, under its hashed, long-cached name."""
    response = redirect(static("favicon.ico"))
    patch_cache_control(response, public=True, max_age=86400)
    return response
