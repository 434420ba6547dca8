"""The Code health page (under Health) and its actions: mark a finding intended or
reopen it (`healthmon.triage_finding`), and Scan now (`healthmon.start_scan`), which
queues a scan of one repository in the background and refuses while one is queued
or running.

Bad filter values are named on the page (400), never a 500. Actions are form POSTs
with CSRF (htmx sends the token from the page's header); the outcome is a message on
the page, which keeps its filters.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from controlplane.background import enqueue
from controlplane.tiers import StaffRequest, permission_required_for_staff, staff_required
from healthmon import code_findings, tasks
from healthmon.code_health import CodeFilters, page_context
from healthmon.code_scans import ScanRefused, queue_scan
from healthmon.models import Finding, Repository

TRIAGE_PERMISSION = "healthmon.triage_finding"
SCAN_PERMISSION = "healthmon.start_scan"


@require_GET
@staff_required
def code_health(request: StaffRequest) -> HttpResponse:
    filters, errors = CodeFilters.from_query(request.GET)
    context = page_context(filters, errors)
    context["live_query"] = request.GET.urlencode() if not errors else ""
    return render(request, "healthmon/code_health.html", context, status=400 if errors else 200)


def _back_to_page(request: StaffRequest) -> HttpResponse:
    """The page again, with the filters it was showing (only its own query string:
    the path is fixed, so the form cannot send anyone elsewhere)."""
    shown = QueryDict(request.POST.get("shown", "")[:2000])
    url = reverse("healthmon:code_health")
    if shown:
        url = f"{url}?{shown.urlencode()}"
    if request.htmx:
        return HttpResponse(status=204, headers={"HX-Redirect": url})
    return redirect(url)


@require_POST
@permission_required_for_staff(TRIAGE_PERMISSION)
def triage_finding(request: StaffRequest, finding_id: int, action: str) -> HttpResponse:
    finding = get_object_or_404(Finding, pk=finding_id)
    kept = (Finding.Status.INTENDED, Finding.Status.IGNORED)
    if action in kept and finding.status == action:
        messages.error(request, f"Finding #{finding.pk} is already marked {action}.")
    elif action == "reopen" and finding.status not in kept:
        messages.error(
            request, f"Finding #{finding.pk} is {finding.status}: only intended or ignored reopen."
        )
    elif action == Finding.Status.INTENDED:
        code_findings.mark_intended(finding, actor=request.user)
        messages.success(request, f"Finding #{finding.pk} is marked intended.")
    elif action == Finding.Status.IGNORED:
        code_findings.mark_ignored(finding, actor=request.user)
        messages.success(request, f"Finding #{finding.pk} is ignored.")
    else:
        code_findings.reopen(finding, actor=request.user)
        messages.success(request, f"Finding #{finding.pk} is open again.")
    return _back_to_page(request)


@require_POST
@permission_required_for_staff(SCAN_PERMISSION)
def scan_now(request: StaffRequest, repository_id: int) -> HttpResponse:
    repository = get_object_or_404(Repository, pk=repository_id)
    try:
        scan = queue_scan(repository)
    except ScanRefused as refused:
        messages.error(request, str(refused))
    else:
        enqueue(tasks.scan_code_repository, scan.pk)
        messages.success(request, f"Scan #{scan.pk} of {repository} is queued.")
    return _back_to_page(request)
