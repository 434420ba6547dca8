from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from controlplane.audit import AuditedModel
from controlplane.money import money_field, usd


class Budget(AuditedModel):
    """A daily spending limit, reset at midnight in the configured time zone."""

    class Scope(models.TextChoices):
        GLOBAL = "global", "Everything"
        USER = "user", "One user"
        OPERATION = "operation", "One operation"
        SERVICE = "service", "One calling service"

    scope = models.CharField(max_length=10, choices=Scope.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    operation = models.CharField(max_length=100, blank=True)
    service = models.CharField(max_length=64, blank=True)
    daily_limit = money_field(help_text="USD per calendar day.")
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["scope", "operation", "service"]
        constraints = [
            models.UniqueConstraint(
                fields=["scope"], condition=Q(scope="global"), name="budget_one_global"
            ),
            models.UniqueConstraint(
                fields=["user"], condition=Q(scope="user"), name="budget_one_per_user"
            ),
            models.UniqueConstraint(
                fields=["operation"],
                condition=Q(scope="operation"),
                name="budget_one_per_operation",
            ),
            models.UniqueConstraint(
                fields=["service"], condition=Q(scope="service"), name="budget_one_per_service"
            ),
            models.CheckConstraint(
                condition=(
                    Q(scope="global", user__isnull=True, operation="", service="")
                    | Q(scope="user", user__isnull=False, operation="", service="")
                    | Q(scope="operation", user__isnull=True, service="") & ~Q(operation="")
                    | Q(scope="service", user__isnull=True, operation="") & ~Q(service="")
                ),
                name="budget_target_matches_scope",
            ),
            models.CheckConstraint(
                condition=Q(daily_limit__gte=0), name="budget_limit_not_negative"
            ),
        ]

    def __str__(self) -> str:
        target = {
            self.Scope.GLOBAL: "global",
            self.Scope.USER: f"user {self.user}" if self.user_id else "user",
            self.Scope.OPERATION: f"operation {self.operation}",
            self.Scope.SERVICE: f"service {self.service}",
        }[self.Scope(self.scope)]
        return f"{target} budget"


class BudgetDay(models.Model):
    """A budget's ledger for one calendar day: reserved (calls in flight) and spent."""

    budget = models.ForeignKey(Budget, on_delete=models.PROTECT, related_name="days")
    day = models.DateField()
    limit = money_field(help_text="The budget's limit when the day began (or it last changed).")
    reserved = money_field(default=0)
    spent = money_field(default=0)
    thresholds_notified = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-day"]
        constraints = [
            models.UniqueConstraint(fields=["budget", "day"], name="budget_day_unique"),
            models.CheckConstraint(
                condition=Q(reserved__gte=0), name="budget_day_reserved_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.budget} {self.day}"


class Reservation(models.Model):
    """Money set aside for one call before it runs, settled or released after."""

    class Status(models.TextChoices):
        HELD = "held"
        SETTLED = "settled"
        RELEASED = "released"

    request_id = models.CharField(max_length=64, unique=True)
    amount = money_field()
    actual = money_field(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.HELD)
    approved = models.BooleanField(
        default=False,
        help_text="An Owner approved this call past its budgets (approval rule 3), "
        "so no limit was checked.",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    days = models.ManyToManyField(BudgetDay, related_name="reservations")
    # Whose call it is: enough to log it when its outcome is never recorded.
    operation = models.CharField(max_length=100, blank=True)
    service = models.CharField(max_length=64, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.request_id} {usd(self.amount)} ({self.status})"


class Recommendation(models.Model):
    """Something the router noticed: an anomaly, a cheaper model, an A/B result."""

    class Kind(models.TextChoices):
        ANOMALY = "anomaly", "Spend anomaly"
        CHEAPER_MODEL = "cheaper_model", "Cheaper model"
        AB_RESULT = "ab_result", "A/B result"
        POOR_QUALITY = "poor_quality", "Replies rated poorly"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    operation = models.CharField(max_length=100, blank=True)
    title = models.CharField(max_length=200)
    detail = models.TextField(blank=True)
    estimated_monthly_saving = money_field(null=True, blank=True)
    dedupe_key = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    dismissed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("dismiss_recommendation", "Can dismiss recommendations")]

    def __str__(self) -> str:
        return self.title
