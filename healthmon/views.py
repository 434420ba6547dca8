"""The Health page (each service's top fingerprints, live) and a fingerprint's page
with its state actions (resolve, unresolve, ignore: Operators and Owners).

Bad filter values are named on the page (400), never a 500. State actions are plain
form POSTs with CSRF; the outcome is a message on the fingerprint's page.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from controlplane.tiers import StaffRequest, permission_required_for_staff, staff_required
from healthmon import fingerprint_states
from healthmon.fingerprint_detail import fingerprint_context
from healthmon.fingerprint_states import STATE_PERMISSION, IgnoreFor, StateRefused
from healthmon.models import Fingerprint
from healthmon.overview import HealthFilters, overview_context


@require_GET
@staff_required
def index(request: StaffRequest) -> HttpResponse:
    filters, errors = HealthFilters.from_query(request.GET)
    context = overview_context(filters, errors)
    context["live_query"] = request.GET.urlencode() if not errors else ""
    return render(request, "healthmon/index.html", context, status=400 if errors else 200)


@require_GET
@staff_required
def fingerprint(request: StaffRequest, fingerprint_id: int) -> HttpResponse:
    found = get_object_or_404(
        Fingerprint.objects.select_related("task", "source"), pk=fingerprint_id
    )
    return render(request, "healthmon/fingerprint.html", fingerprint_context(found))


@require_POST
@permission_required_for_staff(STATE_PERMISSION)
def change_state(request: StaffRequest, fingerprint_id: int, action: str) -> HttpResponse:
    found = get_object_or_404(Fingerprint, pk=fingerprint_id)
    try:
        if action == "resolve":
            fingerprint_states.resolve(found, actor=request.user)
        elif action == "unresolve":
            fingerprint_states.unresolve(found, actor=request.user)
        else:
            how = IgnoreFor.parse(request.POST.get("duration", ""), request.POST.get("more", ""))
            fingerprint_states.ignore(found, how, actor=request.user)
    except StateRefused as refused:
        messages.error(request, str(refused))
    else:
        messages.success(request, f"The fingerprint is {found.get_status_display()} now.")
    return redirect("healthmon:fingerprint", fingerprint_id=found.pk)
