"""The code-health reports under Health: the list of reports (weekly and on demand,
newest first, with a button making one for the last seven days) and one report's
page, rendered from the figures stored with it, so it reads as it was sent."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from controlplane.tiers import StaffRequest, staff_required
from healthmon.code_reports import make_report, seven_days_before
from healthmon.models import CodeReport

REPORTS_PER_PAGE = 50


@require_GET
@staff_required
def code_reports(request: StaffRequest) -> HttpResponse:
    reports = CodeReport.objects.select_related("repository").defer("figures", "text")
    page = Paginator(reports, REPORTS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "healthmon/code_reports.html", {"page": page})


@require_GET
@staff_required
def code_report(request: StaffRequest, report_id: int) -> HttpResponse:
    report = get_object_or_404(CodeReport.objects.select_related("repository"), pk=report_id)
    return render(request, "healthmon/code_report.html", {"report": report})


@require_POST
@staff_required
def make_code_report(request: StaffRequest) -> HttpResponse:
    """A report of the last seven days, stored but not sent: reading the numbers is
    every tier's right, telling the channels is the schedule's (or `code_report --send`)."""
    report = make_report(CodeReport.Trigger.ON_DEMAND, seven_days_before(timezone.now()))
    messages.success(request, "The report of the last seven days is made.")
    return redirect("healthmon:code_report", report_id=report.pk)
