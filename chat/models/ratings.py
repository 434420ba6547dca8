"""What people think of a run's reply: good or bad, one verdict per person and run."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from chat.models.runs import Run
from controlplane.audit import AuditedModel


class Verdict(models.TextChoices):
    GOOD = "good"
    BAD = "bad"


class RunRating(AuditedModel):
    """One person's verdict on one finished run's reply; they may change it (the audit
    keeps the earlier verdict). `answered_by` are the models that answered in the run, read
    from the routing log when the verdict is given, so quality per model is one read."""

    Verdict = Verdict

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="ratings")
    rated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    verdict = models.CharField(max_length=4, choices=Verdict.choices)
    answered_by = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "rated_by"], name="run_rating_once_per_person")
        ]

    def __str__(self) -> str:
        return f"Run #{self.run_id} rated {self.verdict} by user {self.rated_by_id}"
