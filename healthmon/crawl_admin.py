"""Crawl records in the operator panel (Observability): read-only history of each
crawl of a source, its lines, new fingerprints, duration and error."""

from __future__ import annotations

from django.contrib import admin

from controlplane.admin import ReadOnlyAdmin
from controlplane.admin_site import OBSERVABILITY
from healthmon.models import CrawlRecord


@admin.register(CrawlRecord)
class CrawlRecordAdmin(ReadOnlyAdmin):
    admin_section = OBSERVABILITY
    list_display = [
        "started_at",
        "source",
        "ok",
        "lines",
        "new_fingerprints",
        "duplicates",
        "rejected",
        "pages",
        "duration",
        "error",
    ]
    list_filter = ["source", ("error", admin.EmptyFieldListFilter)]
    search_fields = ["source__name", "source__service", "error"]
    list_select_related = ["source"]
    date_hierarchy = "started_at"
    fields = [
        "source",
        "started_at",
        "finished_at",
        "duration",
        "pages",
        "lines",
        "duplicates",
        "rejected",
        "new_fingerprints",
        "error",
    ]

    @admin.display(boolean=True, description="OK")
    def ok(self, record: CrawlRecord) -> bool:
        return record.ok
