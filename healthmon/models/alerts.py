"""Alert rules (configuration, changed by Owners, audited) and the alert episodes
they open: one `Alert` per condition from the moment it starts until it clears.

How rules are evaluated and episodes move lives in `healthmon.alerts`."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q, QuerySet

from controlplane.audit import AuditedModel
from healthmon.levels import Level


class AlertKind(models.TextChoices):
    NEW_FINGERPRINT = "new_fingerprint", "new error fingerprint"
    REGRESSION = "regression", "regression (seen again after being resolved)"
    SPIKE = "spike", "spike (rate over a multiple of its baseline)"
    SUSTAINED_5XX = "sustained_5xx", "sustained HTTP 5xx"


def over_one(value: Decimal) -> None:
    if value is not None and value <= 1:
        raise ValidationError("Must be more than 1 (a rate over N times its baseline).")


def share_of_requests(value: Decimal) -> None:
    if value is not None and not 0 < value <= 1:
        raise ValidationError("A share of requests: more than 0, at most 1 (0.05 is 5%).")


class AlertRule(AuditedModel):
    """When to tell people: a kind of change, for every service or one, at or above a
    level. The parameters each kind reads are listed in its help texts; the others
    are kept but unused."""

    Kind = AlertKind

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=AlertKind.choices)
    enabled = models.BooleanField(default=True)
    service = models.CharField(
        max_length=100, blank=True, help_text="Only this service; blank for every service."
    )
    min_level = models.PositiveSmallIntegerField(
        "minimum level",
        choices=Level.choices,
        default=Level.ERROR,
        help_text="Fingerprints below this level do not alert (not used by sustained 5xx).",
    )
    quiet_minutes = models.PositiveIntegerField(
        default=60,
        validators=[MinValueValidator(1)],
        help_text="New fingerprint and regression: the episode clears once the "
        "fingerprint has not been seen for this long (or is resolved or ignored).",
    )
    multiplier = models.DecimalField(
        max_digits=7,
        decimal_places=2,
        default=Decimal("3"),
        validators=[over_one],
        help_text="Spike: the window's count is over this many times the baseline's "
        "count for a window of the same length.",
    )
    floor = models.PositiveIntegerField(
        default=20,
        validators=[MinValueValidator(1)],
        help_text="Spike: and at least this many occurrences in the window.",
    )
    window_minutes = models.PositiveIntegerField(
        default=5, validators=[MinValueValidator(1)], help_text="Spike: the window counted."
    )
    baseline_minutes = models.PositiveIntegerField(
        default=60,
        validators=[MinValueValidator(1)],
        help_text="Spike: the trailing baseline, the minutes just before the window.",
    )
    threshold = models.DecimalField(
        max_digits=5,
        decimal_places=4,
        default=Decimal("0.05"),
        validators=[share_of_requests],
        help_text="Sustained 5xx: the share of HTTP requests answered 5xx (0.05 is 5%).",
    )
    minutes = models.PositiveIntegerField(
        default=5,
        validators=[MinValueValidator(1)],
        help_text="Sustained 5xx: each of this many minutes had requests and was at "
        "or over the threshold to open; the share over this many under it to clear.",
    )
    min_requests = models.PositiveIntegerField(
        "minimum requests",
        default=20,
        validators=[MinValueValidator(1)],
        help_text="Sustained 5xx: fewer requests than this in the minutes never alert.",
    )
    channels = models.ManyToManyField(
        "controlplane.NotificationChannel",
        blank=True,
        related_name="+",
        help_text="Where its messages go; none chosen: every enabled channel.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            # The forms say it first (field validators); this keeps any other path honest.
            models.CheckConstraint(
                condition=Q(multiplier__gt=1)
                & Q(threshold__gt=0)
                & Q(threshold__lte=1)
                & Q(minutes__gte=1)
                & Q(window_minutes__gte=1)
                & Q(baseline_minutes__gte=1)
                & Q(quiet_minutes__gte=1)
                & Q(floor__gte=1)
                & Q(min_requests__gte=1),
                name="alert_rule_parameters_in_range",
            )
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        kept = settings.HEALTHMON_MINUTE_COUNTS_DAYS * 24 * 60
        if (self.window_minutes or 0) + (self.baseline_minutes or 0) > kept:
            # Older minutes are rolled up to hours (healthmon.retention): a spike rule
            # reaching past them would see a baseline of nothing.
            raise ValidationError(
                {
                    "baseline_minutes": f"The window and the baseline together may span "
                    f"at most {kept} minutes (HEALTHMON_MINUTE_COUNTS_DAYS)."
                }
            )

    def save(self, *args: Any, **kwargs: Any) -> None:
        # A decimal comes back from the database with its field's places ("3.00"):
        # stored the same way, an unchanged "3" is not audited as a change.
        for name in ("multiplier", "threshold"):
            field = self._meta.get_field(name)
            value = getattr(self, name)
            if value is not None:
                places = Decimal(1).scaleb(-field.decimal_places)  # type: ignore[union-attr]
                setattr(self, name, Decimal(value).quantize(places))
        super().save(*args, **kwargs)


class AlertQuerySet(QuerySet["Alert"]):
    def open(self) -> AlertQuerySet:
        return self.filter(cleared_at__isnull=True)


class Alert(models.Model):
    """An episode: a rule's condition, from when it opened to when it cleared, told
    once each way. `opened_notice` and `cleared_notice` are the dedupe keys of the
    messages that told it (its own, or a summary of many): `deliveries()`."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="alerts")
    kind = models.CharField(max_length=20, choices=AlertKind.choices)
    fingerprint = models.ForeignKey(
        "healthmon.Fingerprint",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="alerts",
    )
    service = models.CharField(max_length=100)
    since = models.DateTimeField(
        help_text="When the condition started (first seen, regressed, window start)."
    )
    opened_at = models.DateTimeField(db_index=True)
    cleared_at = models.DateTimeField(null=True, blank=True)
    cleared_reason = models.CharField(max_length=200, blank=True)
    summary = models.CharField(max_length=300)
    details = models.JSONField(default=dict, blank=True)
    opened_notice = models.CharField(max_length=200, blank=True)
    cleared_notice = models.CharField(max_length=200, blank=True)

    objects = AlertQuerySet.as_manager()

    class Meta:
        ordering = ["-opened_at", "-id"]
        constraints = [
            # One open episode per rule and subject, whoever evaluates at the same time.
            models.UniqueConstraint(
                fields=["rule", "fingerprint"],
                condition=Q(cleared_at__isnull=True, fingerprint__isnull=False),
                name="alert_open_once_per_fingerprint",
            ),
            models.UniqueConstraint(
                fields=["rule", "service"],
                condition=Q(cleared_at__isnull=True, fingerprint__isnull=True),
                name="alert_open_once_per_service",
            ),
        ]
        indexes = [models.Index(fields=["rule", "cleared_at"], name="alert_rule_cleared")]

    def __str__(self) -> str:
        return self.summary

    @property
    def is_open(self) -> bool:
        return self.cleared_at is None

    def deliveries(self) -> QuerySet[Any]:
        from controlplane.models import NotificationDelivery

        keys = [key for key in (self.opened_notice, self.cleared_notice) if key]
        return NotificationDelivery.objects.filter(dedupe_key__in=keys)
