"""One row per crawl of a source (`healthmon.railway.crawler`): what it read and
what failed, for the source's page and the admin. Each crawl prunes its source's
rows past `HEALTHMON_CRAWL_RECORDS_KEPT`."""

from __future__ import annotations

from datetime import timedelta

from django.db import models


class CrawlRecord(models.Model):
    source = models.ForeignKey(
        "healthmon.LogSource", on_delete=models.CASCADE, related_name="crawls"
    )
    started_at = models.DateTimeField(db_index=True)
    finished_at = models.DateTimeField()
    duration = models.DurationField(default=timedelta)
    pages = models.PositiveIntegerField(default=0, help_text="API queries answered.")
    lines = models.PositiveIntegerField(default=0, help_text="Log lines ingested.")
    duplicates = models.PositiveIntegerField(
        default=0, help_text="Lines read again in the overlap window and skipped."
    )
    rejected = models.PositiveIntegerField(default=0)
    new_fingerprints = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["source", "-id"])]

    def __str__(self) -> str:
        return f"{self.source} at {self.started_at:%Y-%m-%d %H:%M:%S}"

    @property
    def ok(self) -> bool:
        return not self.error
