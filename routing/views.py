from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from controlplane.money import ZERO
from controlplane.tiers import staff_required
from routing import budgets, gateway, insights
from routing.gateway_asgi import ENDPOINTS
from routing.models import AIModel, Policy, Recommendation, Route

CHART_WIDTH, CHART_HEIGHT = 560, 140


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


def bars(days: list[insights.DayTotals]) -> list[dict[str, Any]]:
    """Bar geometry for the 7-day spend chart, drawn server-side as SVG."""
    top = max((d.cost for d in days), default=ZERO) or Decimal(1)
    width = CHART_WIDTH / max(len(days), 1)
    return [
        {
            "x": round(i * width + 4, 1),
            "width": round(width - 8, 1),
            "height": round(float(d.cost / top) * (CHART_HEIGHT - 20), 1),
            "y": round(CHART_HEIGHT - 20 - float(d.cost / top) * (CHART_HEIGHT - 20), 1),
            "label": d.day.strftime("%a %d"),
            "cost": d.cost,
            "calls": d.calls,
        }
        for i, d in enumerate(days)
    ]


@require_GET
@staff_required
def index(request: HttpRequest) -> HttpResponse:
    week = insights.daily_totals(insights.TRAILING_DAYS)
    by_model = insights.spend_by("model")
    total_calls = sum(row["calls"] for row in by_model) or 1
    savings = None
    form = SavingsForm(request.GET or None)
    if form.is_bound and form.is_valid():
        savings = insights.savings(form.cleaned_data["operation"], form.cleaned_data["model"])
    return render(
        request,
        "routing/index.html",
        {
            "budget_rows": budgets.spend_today(),
            "meter": {"amber_from": budgets.AMBER_FROM, "red_above": budgets.RED_ABOVE},
            "week": week,
            "week_total": sum((d.cost for d in week), ZERO),
            "bars": bars(week),
            "chart": {"width": CHART_WIDTH, "height": CHART_HEIGHT},
            "by_operation": insights.spend_by("operation"),
            "by_kind": insights.spend_by_kind(),
            "by_model": [{**row, "share": row["calls"] * 100 / total_calls} for row in by_model],
            "latency": insights.latency_by_model(),
            "routes": Route.objects.select_related(
                "primary_model__provider", "policy", "ab_model"
            ).prefetch_related("fallback_links__model"),
            "policies": Policy.objects.select_related("preferred_model", "preferred_provider"),
            "recommendations": Recommendation.objects.filter(dismissed_at__isnull=True)[:10],
            "ab": insights.ab_comparisons(),
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
