"""What ingest keeps: one row per (service, fingerprint) with its counts and status,
per-minute counts (rolled up to hours after a day), a bounded ring of recent sample
lines, and per-minute HTTP totals per service. No table grows with every log line."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from healthmon.levels import Level


class FingerprintStatus(models.TextChoices):
    """Issue states, as Sentry has them."""

    UNRESOLVED = "unresolved"
    RESOLVED = "resolved"
    REGRESSED = "regressed", "regressed (seen again after being resolved)"
    IGNORED = "ignored"


class Fingerprint(models.Model):
    """An error pattern of one service. `key` is the grouper's stable id; the
    auto-increasing `id` orders rows as they were stored, so other processes learn the
    groups stored since they last looked (`healthmon.ingest`)."""

    Status = FingerprintStatus

    service = models.CharField(max_length=100)
    key = models.CharField(max_length=32, help_text="The grouper's stable fingerprint id.")
    template = models.TextField()
    # When the template last generalised: other processes learn the change.
    template_changed_at = models.DateTimeField(default=timezone.now, db_index=True)
    level = models.PositiveSmallIntegerField(choices=Level.choices, default=Level.INFO)
    status = models.CharField(
        max_length=12, choices=FingerprintStatus.choices, default=FingerprintStatus.UNRESOLVED
    )
    count = models.BigIntegerField(default=0)
    first_seen = models.DateTimeField(db_index=True)
    last_seen = models.DateTimeField(db_index=True)
    source = models.ForeignKey(
        "healthmon.LogSource", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    status_changed_at = models.DateTimeField(null=True, blank=True)
    regressed_at = models.DateTimeField(null=True, blank=True)
    ignored_until = models.DateTimeField(
        null=True, blank=True, help_text="Ignored until this time, then unresolved again."
    )
    ignored_until_count = models.BigIntegerField(
        null=True, blank=True, help_text="Ignored until the total count reaches this."
    )
    task = models.ForeignKey(
        "selfheal.Task", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-last_seen"]
        constraints = [
            models.UniqueConstraint(fields=["service", "key"], name="fingerprint_service_key"),
        ]
        indexes = [models.Index(fields=["service", "level", "status"])]
        permissions = [
            ("change_fingerprint_state", "Can resolve, unresolve and ignore fingerprints"),
        ]

    def __str__(self) -> str:
        return f"{self.service}: {self.template[:80]}"

    @property
    def ref(self) -> str:
        """The fingerprint as the rest of the product names it (tasks, diagnosis)."""
        return f"{self.service}:{self.key}"


class MinuteCount(models.Model):
    fingerprint = models.ForeignKey(Fingerprint, on_delete=models.CASCADE, related_name="minutes")
    minute = models.DateTimeField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["fingerprint", "minute"], name="minute_count_once")
        ]
        indexes = [models.Index(fields=["minute"])]

    def __str__(self) -> str:
        return f"{self.count} at {self.minute:%Y-%m-%d %H:%M}"


class HourCount(models.Model):
    fingerprint = models.ForeignKey(Fingerprint, on_delete=models.CASCADE, related_name="hours")
    hour = models.DateTimeField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["fingerprint", "hour"], name="hour_count_once")
        ]
        indexes = [models.Index(fields=["hour"])]

    def __str__(self) -> str:
        return f"{self.count} in {self.hour:%Y-%m-%d %H}h"


class ServiceMinute(models.Model):
    """A service's records in one minute, and of them the HTTP requests and the 5xx
    answers (for the sustained-5xx rule)."""

    service = models.CharField(max_length=100)
    minute = models.DateTimeField()
    records = models.PositiveIntegerField(default=0)
    http_requests = models.PositiveIntegerField(default=0)
    http_5xx = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["service", "minute"], name="service_minute_once")
        ]
        indexes = [models.Index(fields=["minute"])]

    def __str__(self) -> str:
        return f"{self.service} at {self.minute:%Y-%m-%d %H:%M}"


class Sample(models.Model):
    """One of the last few lines of a fingerprint: a ring of `slot`s, overwritten."""

    fingerprint = models.ForeignKey(Fingerprint, on_delete=models.CASCADE, related_name="samples")
    slot = models.PositiveSmallIntegerField()
    at = models.DateTimeField()
    level = models.PositiveSmallIntegerField(choices=Level.choices, default=Level.INFO)
    message = models.TextField()
    attributes = models.JSONField(default=dict, blank=True)
    source = models.ForeignKey(
        "healthmon.LogSource", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-at"]
        constraints = [
            models.UniqueConstraint(fields=["fingerprint", "slot"], name="sample_slot_once")
        ]

    def __str__(self) -> str:
        return self.message[:80]
