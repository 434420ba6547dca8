"""Integrations: the product's accounts on outside services (Railway, GitHub, Telegram,
Discord), each a kind, a name and credentials encrypted at rest.

What a kind needs (its credential fields, its connection test) lives in
`controlplane.integrations`; the parts that use an integration (healthmon's Railway
crawler) read `secrets` and `settings` and report failures with `record_error`.
"""

from __future__ import annotations

import json
from typing import Any

from django.db import models
from django.utils import timezone

from controlplane.audit import AuditedModel
from controlplane.crypto import EncryptedTextField, mask


class Integration(AuditedModel):
    class Kind(models.TextChoices):
        RAILWAY = "railway", "Railway"
        GITHUB = "github", "GitHub"
        TELEGRAM = "telegram", "Telegram"
        DISCORD = "discord", "Discord"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    name = models.SlugField(max_length=64, unique=True)
    # The kind's secret fields as one JSON object, encrypted; never shown again.
    credentials = EncryptedTextField(blank=True, default="")
    # The kind's other fields (an API base URL, ids): not secret.
    settings = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)
    last_tested_at = models.DateTimeField(null=True, blank=True)
    last_test_ok = models.BooleanField(null=True, blank=True)
    last_test_message = models.TextField(blank=True)
    last_error = models.TextField(blank=True, help_text="The last failure of a part using it.")
    last_error_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"

    @property
    def secrets(self) -> dict[str, str]:
        if not self.credentials:
            return {}
        values = json.loads(self.credentials)
        return {str(k): str(v) for k, v in values.items()} if isinstance(values, dict) else {}

    def set_secrets(self, values: dict[str, str]) -> None:
        self.credentials = json.dumps(values, sort_keys=True) if values else ""

    def setting(self, name: str, default: Any = None) -> Any:
        return (self.settings or {}).get(name, default)

    def without_secrets(self, text: str) -> str:
        """`text` with each of the integration's secrets masked: a service's error may
        echo what it was sent, and errors are shown and kept."""
        # Longest first, so a secret containing another is masked whole.
        for secret in sorted(self.secrets.values(), key=len, reverse=True):
            if len(secret) >= 4:
                text = text.replace(secret, mask(secret))
        return text

    def record_error(self, error: str) -> None:
        """A part using the integration failed with it (an expired token, an outage):
        shown on its row until it works again (`clear_error`). Not a configuration
        change, so not audited."""
        self.last_error, self.last_error_at = self.without_secrets(error)[:2000], timezone.now()
        type(self)._base_manager.filter(pk=self.pk).update(
            last_error=self.last_error, last_error_at=self.last_error_at
        )

    def clear_error(self) -> None:
        if self.last_error:
            self.last_error, self.last_error_at = "", None
            type(self)._base_manager.filter(pk=self.pk).update(last_error="", last_error_at=None)
