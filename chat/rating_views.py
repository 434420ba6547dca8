"""The rating control under a run's reply: its fragment, and the vote that swaps it."""

from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from chat.models import Run
from chat.ratings import NotRatable, can_rate, rate_run, rating_summary
from controlplane.tiers import StaffRequest, staff_required

FRAGMENT = "chat/partials/run_rating.html"


@require_http_methods(["GET", "POST"])
@staff_required
def rating(request: StaffRequest, run_id: int) -> HttpResponse:
    """GET: the control (the session page loads it lazily). POST `verdict=good|bad`:
    the person's verdict, given or changed. Every staff member may rate (see
    `chat.ratings.rate_run`)."""
    run = get_object_or_404(Run, pk=run_id)
    error, status = "", 200
    if request.method == "POST":
        try:
            rate_run(run, request.user, request.POST.get("verdict", ""))
        except NotRatable as exc:
            error, status = f"{exc} Rate its reply once it has finished.", 409
        except ValueError as exc:
            error, status = str(exc), 400
        if not error and not request.htmx:
            return redirect(f"{reverse('chat:session', args=[run.session_id])}?run={run.pk}")
    context = {
        "run": run,
        "ratable": can_rate(run),
        "rating": rating_summary(run, request.user),
        "rating_error": error,
    }
    # htmx swaps only 2xx answers: it gets the control with the error in it.
    return render(request, FRAGMENT, context, status=200 if request.htmx else status)
