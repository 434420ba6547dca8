"""Home's errors and code-health cards: open error fingerprints (unresolved or
regressed, at error level or worse) with the newest ones; the latest code-health
report beside the open findings and the latest scan. Ingest and the fingerprint
states already publish on the health group, scans and reports on code health's."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Q
from django.urls import reverse

from controlplane.home.cards import for_everyone, register_home_card
from controlplane.home.changes import each_object, register_object_pages
from healthmon.code_consumers import CODE_HEALTH_GROUP
from healthmon.ingest import HEALTH_GROUP
from healthmon.levels import Level
from healthmon.models import CodeReport, Finding, Fingerprint, FingerprintStatus, Scan

NEWEST_LIMIT = 5
OPEN_STATUSES = (FingerprintStatus.UNRESOLVED, FingerprintStatus.REGRESSED)


def open_error_fingerprints() -> Any:
    return Fingerprint.objects.filter(status__in=OPEN_STATUSES, level__gte=Level.ERROR)


def errors_context() -> dict[str, Any]:
    """Two queries: the open count (and how many regressed), and the newest."""
    open_errors = open_error_fingerprints()
    counts = open_errors.aggregate(
        open=Count("id"), regressed=Count("id", filter=Q(status=FingerprintStatus.REGRESSED))
    )
    newest = open_errors.order_by("-first_seen", "-id")[:NEWEST_LIMIT]
    return {
        "open_errors": counts["open"],
        "regressed_errors": counts["regressed"],
        "newest_errors": list(newest),
    }


def code_health_context() -> dict[str, Any]:
    """Three queries: the latest report, the open findings, the latest scan."""
    return {
        "code_report": CodeReport.objects.select_related("repository").first(),
        "open_findings": Finding.objects.filter(status=Finding.Status.OPEN).count(),
        "latest_scan": Scan.objects.select_related("repository").first(),
    }


def register() -> None:
    """Called once from the app's ready()."""
    register_home_card(
        "errors",
        "healthmon/partials/home_errors.html",
        for_everyone(errors_context),
        order=60,
        events=("health.fingerprints",),
        groups=(HEALTH_GROUP,),
    )
    register_home_card(
        "code_health",
        "healthmon/partials/home_code_health.html",
        for_everyone(code_health_context),
        order=70,
        events=("code.changed",),
        groups=(CODE_HEALTH_GROUP,),
    )
    register_object_pages(
        "healthmon",
        "fingerprint",
        each_object(lambda pk: reverse("healthmon:fingerprint", args=[pk])),
    )
    register_object_pages(
        "healthmon",
        "codereport",
        each_object(lambda pk: reverse("healthmon:code_report", args=[pk])),
    )
