from __future__ import annotations

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.utils import timezone

from controlplane.money import MoneyField
from controlplane.tiers import Tier


class Approval(models.Model):
    """One approval for anything in the product: a costly call, a risky tool, a repair
    over its cap, a toggle change. Decided through `controlplane.approvals`."""

    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"
        EXPIRED = "expired"
        # The request's asker no longer needs it (a stopped chat run): nobody may
        # approve something that will never run.
        WITHDRAWN = "withdrawn"

    class RequiredTier(models.IntegerChoices):
        OPERATOR = Tier.OPERATOR, "Operator"
        OWNER = Tier.OWNER, "Owner"

    content_type = models.ForeignKey(
        ContentType, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    object_id = models.CharField(max_length=64, blank=True)
    subject = GenericForeignKey("content_type", "object_id")
    action = models.CharField(
        max_length=100, db_index=True, help_text="What will happen, e.g. toggle.set."
    )
    proposal = models.JSONField(
        default=dict, blank=True, help_text="The exact change being approved."
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="approvals_requested"
    )
    reason = models.TextField()
    amount = MoneyField(null=True, blank=True, help_text="USD, when money is involved.")
    required_tier = models.PositiveSmallIntegerField(
        choices=RequiredTier.choices, default=RequiredTier.OPERATOR
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="approvals_decided",
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_note = models.TextField(blank=True)
    outcome = models.TextField(blank=True, help_text="What happened once the decision was made.")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "expires_at"])]
        permissions = [
            ("decide_approval", "Can approve or reject requests"),
            ("decide_owner_approval", "Can decide requests for Owners (money, toggles)"),
            ("request_approval", "Can request approvals"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(decided_by=models.F("requested_by")),
                name="approval_not_decided_by_requester",
            ),
            models.CheckConstraint(
                condition=models.Q(amount__isnull=True) | models.Q(required_tier=Tier.OWNER),
                name="approval_money_needs_owner",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.action} ({self.status})"

    @property
    def is_pending(self) -> bool:
        return self.status == self.Status.PENDING

    @property
    def is_expired(self) -> bool:
        return self.status == self.Status.EXPIRED or (
            self.is_pending and self.expires_at <= timezone.now()
        )

    @property
    def decision_permission(self) -> str:
        """The permission a person needs to decide this request."""
        if self.required_tier == Tier.OWNER:
            return "controlplane.decide_owner_approval"
        return "controlplane.decide_approval"

    @property
    def required_tier_label(self) -> str:
        return Tier(self.required_tier).label
