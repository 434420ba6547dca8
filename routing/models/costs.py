from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

from controlplane.models import AppendOnlyModel
from controlplane.money import money_field
from routing.models.catalog import CallKind


def seconds_field() -> models.DecimalField[Any, Any]:
    """Seconds of audio or video, to the millisecond (what a file's header gives)."""
    return models.DecimalField(max_digits=12, decimal_places=3, default=0, db_default=0)


class OperationLog(AppendOnlyModel):
    """One row per AI call, written once. The sum of `cost` is what was spent."""

    class Status(models.TextChoices):
        OK = "ok"
        ERROR = "error"
        REFUSED = "refused", "Refused (budget, approval or toggle)"
        # Stopped by its caller mid-stream (a client that went away, a run stopped by
        # a person): not an error of the model or provider; what was streamed is paid.
        CANCELLED = "cancelled", "Cancelled by its caller"

    class CostSource(models.TextChoices):
        PROVIDER = "provider", "Reported by the provider"
        CATALOG = "catalog", "Tokens times catalog prices"
        OFFLINE = "offline", "Offline model (free)"
        UNPRICED = "unpriced", "No price known"
        NONE = "none", "No call made"
        RESERVED = "reserved", "Its reservation (the outcome was never recorded)"

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    request_id = models.CharField(max_length=64, db_index=True)
    operation = models.CharField(max_length=100, db_index=True)
    kind = models.CharField(
        max_length=16, choices=CallKind.choices, default=CallKind.CHAT, db_default=CallKind.CHAT
    )
    mode = models.CharField(max_length=20, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    service = models.CharField(max_length=64, blank=True, db_index=True)
    model_requested = models.CharField(max_length=200, blank=True)
    model_used = models.CharField(max_length=200, blank=True)
    provider = models.CharField(max_length=64, blank=True)
    fallback_used = models.BooleanField(default=False)
    ab_variant = models.BooleanField(default=False)
    stream = models.BooleanField(default=False)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    cache_write_tokens = models.PositiveIntegerField(default=0)
    reasoning_tokens = models.PositiveIntegerField(default=0)
    # The units priced besides tokens (`UNIT_PRICES`): input images, seconds of input
    # audio and video, characters spoken.
    images = models.PositiveIntegerField(default=0, db_default=0)
    audio_seconds = seconds_field()
    video_seconds = seconds_field()
    characters = models.PositiveIntegerField(default=0, db_default=0)
    cost = money_field(default=0)
    cost_source = models.CharField(max_length=10, choices=CostSource.choices)
    latency_ms = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices)
    error = models.TextField(blank=True)
    # Non-empty: the provider's report was unusable (a negative, unreadable or absurd
    # cost or count) and what was recorded instead; the call is flagged for review.
    usage_flag = models.TextField(
        blank=True,
        # Added in place on every database (SQLite too, so the table and its triggers stay).
        db_default="",
        default="",
        help_text="What the provider reported that could not be used, and what was used instead.",
    )
    attempts = models.JSONField(
        default=list, blank=True, help_text="Each model tried, in order, with its outcome."
    )

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["operation", "at"]),
            models.Index(fields=["model_used", "at"]),
        ]

    def __str__(self) -> str:
        return f"{self.operation} {self.model_used or self.model_requested} {self.status}"

    def fit_columns(self) -> OperationLog:
        """Cut text longer than its column (a caller's header, a provider's model name),
        so that writing the row of a call that happened cannot fail on it."""
        for column in self._meta.concrete_fields:
            if isinstance(column, models.CharField) and column.max_length:
                value = getattr(self, column.attname)
                if isinstance(value, str) and len(value) > column.max_length:
                    setattr(self, column.attname, value[: column.max_length])
        return self


class DailySpend(models.Model):
    """Rollup of the log per day, operation, model and service: what dashboards read."""

    day = models.DateField()
    operation = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=CallKind.choices, default=CallKind.CHAT)
    model = models.CharField(max_length=200)
    service = models.CharField(max_length=64, blank=True)
    calls = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    cost = money_field(default=0)
    latency_p50_ms = models.PositiveIntegerField(default=0)
    latency_p95_ms = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-day", "operation", "model"]
        verbose_name_plural = "daily spend"
        constraints = [
            models.UniqueConstraint(
                fields=["day", "operation", "kind", "model", "service"],
                name="daily_spend_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.operation} {self.model}"
