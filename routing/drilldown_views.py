"""One operation's or one model's calls over a range: its totals, charts, the other
side's breakdown (an operation's models, a model's operations) and its recent calls."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from controlplane.tiers import staff_required
from routing import usage_report
from routing.models import OperationLog
from routing.quality import quality_by_model
from routing.usage_report import pick_range
from routing.views import usage_figures

CALLS_PER_PAGE = 25
# What a row of the recent calls shows; the rest of a call (its attempts, its
# error's full text) is in the admin's operation log.
CALL_COLUMNS = (
    "at",
    "operation",
    "kind",
    "model_used",
    "model_requested",
    "status",
    "service",
    "user__username",
    "prompt_tokens",
    "completion_tokens",
    "cost",
    "latency_ms",
    "error",
    "fallback_used",
)


@require_GET
@staff_required
def operation(request: HttpRequest, operation: str) -> HttpResponse:
    return drilldown(request, "operation", operation)


@require_GET
@staff_required
def model(request: HttpRequest, model: str) -> HttpResponse:
    return drilldown(request, "model", model)


def drilldown(request: HttpRequest, subject: str, name: str) -> HttpResponse:
    if len(name) > OperationLog._meta.get_field("model_used").max_length:  # type: ignore[operator]
        raise Http404("No such operation or model.")
    time_range, range_notice = pick_range(request.GET.get("range"))
    only = {subject: name}
    report = usage_report.report(time_range, **only)
    quality = quality_by_model(*time_range.bounds())
    calls = usage_report.calls_in(time_range, **only).values(*CALL_COLUMNS)
    page = Paginator(calls, CALLS_PER_PAGE).get_page(request.GET.get("page"))
    return render(
        request,
        "routing/drilldown.html",
        {
            **usage_figures(report, quality),
            "subject": subject,
            "name": name,
            "range_notice": range_notice,
            "breakdown": report.by("model" if subject == "operation" else "operation"),
            "own_quality": quality.get(name) if subject == "model" else None,
            "page": page,
        },
    )
