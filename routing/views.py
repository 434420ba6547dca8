from __future__ import annotations

from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from controlplane.money import usd
from controlplane.tiers import staff_required
from routing import budgets, charts, gateway, insights, usage_report
from routing.gateway_asgi import ENDPOINTS
from routing.models import AIModel, Policy, Recommendation, Route
from routing.quality import ModelQuality, quality_by_model
from routing.usage_report import RANGES, Report, TimeRange, pick_range


class SavingsForm(forms.Form):
    operation = forms.ChoiceField(choices=[])
    model = forms.ModelChoiceField(queryset=AIModel.objects.none())

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        operation = self.fields["operation"]
        assert isinstance(operation, forms.ChoiceField)
        operation.choices = [(op, op) for op in Route.objects.values_list("operation", flat=True)]
        model = self.fields["model"]
        assert isinstance(model, forms.ModelChoiceField)
        model.queryset = AIModel.objects.filter(active=True).select_related("provider")


def usage_figures(report: Report, quality: dict[str, ModelQuality]) -> dict[str, Any]:
    """What the page and the drill-downs draw from a report: the spend columns, the
    model mix, latency per model over time and quality beside errors and cost."""
    labels = report.time_range.bucket_labels()
    buckets = report.per_bucket()
    by_model = report.by("model")
    palette = charts.colours([model for model, _ in by_model])
    latency = report.latency_by_model()
    lines, top = charts.latency_lines({row.model: row.series for row in latency}, labels, palette)
    return {
        "range": report.time_range,
        "ranges": RANGES.values(),
        "total": report.total,
        "chart": {"width": charts.WIDTH, "height": charts.HEIGHT, "plot": charts.PLOT},
        "mix": {"width": charts.MIX_WIDTH, "label": charts.MIX_LABEL},
        "bars": charts.columns(
            labels,
            [tally.cost for tally in buckets],
            [
                f"{label}: {usd(t.cost)} over {t.calls} calls"
                for label, t in zip(labels, buckets, strict=True)
            ],
        ),
        "by_operation": report.by("operation"),
        "by_kind": report.by_kind(),
        "model_mix": charts.share_bars([(m, t.calls) for m, t in by_model], palette),
        "mix_height": len(by_model) * charts.SHARE_ROW,
        "latency": latency,
        "latency_lines": lines,
        "latency_top": top,
        "axis": charts.axis_labels(labels),
        "quality": [(model, tally, quality.get(model)) for model, tally in by_model],
    }


def usage_context(time_range: TimeRange) -> dict[str, Any]:
    """The Routing page's live part (`routing/partials/usage.html`): today's spend
    against each budget, and the range's spend, breakdowns, latency and quality. The
    page and its socket (`routing.consumers`) render it with this."""
    return {
        **usage_figures(usage_report.report(time_range), quality_by_model(*time_range.bounds())),
        "budget_rows": budgets.spend_today(),
        "meter": {"amber_from": budgets.AMBER_FROM, "red_above": budgets.RED_ABOVE},
    }


@require_GET
@staff_required
def index(request: HttpRequest) -> HttpResponse:
    time_range, range_notice = pick_range(request.GET.get("range"))
    savings = None
    # The range alone is no question to the calculator: its form stays unbound.
    asked = "operation" in request.GET or "model" in request.GET
    form = SavingsForm(request.GET if asked else None)
    if form.is_bound and form.is_valid():
        savings = insights.savings(
            form.cleaned_data["operation"], form.cleaned_data["model"], days=time_range.days
        )
    return render(
        request,
        "routing/index.html",
        {
            **usage_context(time_range),
            "range_notice": range_notice,
            "routes": Route.objects.select_related(
                "primary_model__provider", "policy", "ab_model"
            ).prefetch_related("fallback_links__model"),
            "policies": Policy.objects.select_related("preferred_model", "preferred_provider"),
            "recommendations": Recommendation.objects.filter(dismissed_at__isnull=True)[:10],
            "ab": insights.ab_comparisons(time_range.days),
            "form": form,
            "savings": savings,
        },
    )


@csrf_exempt  # a service's call with a key, like the gateway's own paths: no session
def gateway_unknown_path(request: HttpRequest) -> HttpResponse:
    """Any `/v1/...` path the gateway does not serve: OpenAI's JSON 404, which clients
    read, rather than Django's HTML page."""
    response = gateway.error_response(
        404,
        "unknown_url",
        f"Unknown request URL: {request.method} {request.path}. The gateway serves "
        + ", ".join(f"{method} {path}" for path, (method, _) in ENDPOINTS.items())
        + ".",
        error_type="invalid_request_error",
    )
    return HttpResponse(response.body, status=404, headers=response.headers)
