from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.db import models
from django.utils import timezone

from controlplane import api_tokens
from controlplane.audit import AuditedModel

if TYPE_CHECKING:
    from controlplane.tiers import StaffUser

KEY_PREFIX = "cpk_"


hash_key = api_tokens.digest


class ServiceKey(AuditedModel):
    """An API key for another service calling the gateway. Only its hash is stored."""

    name = models.CharField(max_length=100)
    service = models.SlugField(
        max_length=64, help_text="The calling service, for budgets and logs."
    )
    lookup = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    # The hash is not a secret to protect (the key has 256 bits), but it is redacted
    # in the audit trail all the same.
    key_hash.audit_redacted = True  # type: ignore[attr-defined]
    default_operation = models.CharField(max_length=100, default="chat")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["service", "name"]

    def __str__(self) -> str:
        return f"{self.service}/{self.name}"

    def assign_secret(self) -> str:
        """Give the key a new secret; returns it. Only its hash is kept."""
        self.lookup, raw, self.key_hash = api_tokens.new_token(KEY_PREFIX)
        return raw

    @classmethod
    def issue(
        cls,
        *,
        name: str,
        service: str,
        default_operation: str = "chat",
        created_by: StaffUser | None = None,
    ) -> tuple[ServiceKey, str]:
        """Create a key; returns (key, raw secret). The raw secret is shown once, never stored."""
        key = cls(
            name=name, service=service, default_operation=default_operation, created_by=created_by
        )
        raw = key.assign_secret()
        key.save()
        return key, raw

    @classmethod
    def authenticate(cls, raw: str) -> ServiceKey | None:
        lookup = api_tokens.lookup_of(raw, KEY_PREFIX)
        if lookup is None:
            return None
        key = cls.objects.filter(lookup=lookup, revoked_at__isnull=True).first()
        if key is None or not api_tokens.matches(key.key_hash, raw):
            return None
        return key

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def revoke(self) -> None:
        self.revoked_at = timezone.now()
        self.save()
