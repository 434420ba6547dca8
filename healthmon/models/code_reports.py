"""The weekly code-health report: per repository, the findings new, fixed and still
open by check over a period, the trend against the period before, the pull requests
opened and merged and the latest scan; stored with the text sent to the channels."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class CodeReport(models.Model):
    class Trigger(models.TextChoices):
        SCHEDULED = "scheduled", "Weekly schedule"
        ON_DEMAND = "on_demand", "On demand"

    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    # The report covers [period_start, period_end): an ISO week when scheduled, the
    # seven days before it was asked for when on demand.
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    repository = models.ForeignKey(
        "healthmon.Repository",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        help_text="Blank: every repository.",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # The counts the page and the text are rendered from (code_reports.figures).
    figures = models.JSONField(default=dict)
    subject = models.CharField(max_length=200)
    text = models.TextField(help_text="The summary sent to the notification channels.")
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            # However many schedulers tick (a restart, two processes), a week is
            # reported once, and so sent once.
            models.UniqueConstraint(
                fields=["period_start"],
                condition=Q(trigger="scheduled"),
                name="one_scheduled_code_report_per_week",
            )
        ]

    def __str__(self) -> str:
        return self.subject
