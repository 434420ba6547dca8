from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from controlplane.tiers import staff_required


@require_GET
@staff_required
def index(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "controlplane/section_pending.html",
        {
            "section": "Health",
            "purpose": "Service logs grouped by fingerprint, and code health scans.",
        },
    )
