"""Where logs come from: a source belongs to a service and is crawled (Railway),
pushed to (OTLP/HTTP, with its ingest keys) or fed from a file (`ingest_logs`)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from controlplane.audit import AuditedModel


class LogSource(AuditedModel):
    class Kind(models.TextChoices):
        RAILWAY = "railway", "Railway crawler"
        OTLP = "otlp", "Pushed over OTLP/HTTP"
        FILE = "file", "File or stdin (ingest_logs)"

    name = models.SlugField(max_length=64, unique=True)
    service = models.CharField(
        max_length=100,
        help_text="The service its logs are from (OTLP records naming their own "
        "service.name are filed under that).",
    )
    kind = models.CharField(max_length=10, choices=Kind.choices)
    integration = models.ForeignKey(
        "controlplane.Integration",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="log_sources",
        help_text="The account a crawler reads with (Railway sources).",
    )
    # What the kind needs to find the logs (Railway: project, environment and service
    # ids, the streams to read and their filter).
    settings = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    is_demo = models.BooleanField(default=False, help_text="Demo data, labelled as such.")
    # Operational state, written by the crawler and ingest without an audit event.
    cursor = models.JSONField(default=dict, blank=True, editable=False)
    last_ingest_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.TextField(blank=True, editable=False)
    last_error_at = models.DateTimeField(null=True, blank=True, editable=False)
    backoff_until = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["service", "name"]

    def __str__(self) -> str:
        return self.name

    def set_state(self, **fields: object) -> None:
        """Write operational fields (cursor, errors, backoff) without an audit event."""
        for name, value in fields.items():
            setattr(self, name, value)
        type(self)._base_manager.filter(pk=self.pk).update(**fields)


class IngestKey(models.Model):
    """A key a service pushes logs to one source with: shown once, stored hashed
    (`controlplane.api_tokens`), revocable."""

    PREFIX = "cplog_"

    source = models.ForeignKey(LogSource, on_delete=models.CASCADE, related_name="ingest_keys")
    name = models.CharField(max_length=100)
    lookup = models.CharField(max_length=16, unique=True, editable=False)
    digest = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["source", "name"]
        constraints = [
            models.CheckConstraint(condition=~Q(digest=""), name="ingest_key_has_digest")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.PREFIX}{self.lookup}_…)"

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])
