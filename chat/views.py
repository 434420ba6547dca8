from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from controlplane.tiers import Tier, tier_required


@require_GET
@tier_required(Tier.OBSERVER)
def index(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "controlplane/section_pending.html",
        {"section": "Chat", "purpose": "Agent runs streaming live under budgets and guardrails."},
    )
