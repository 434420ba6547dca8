from __future__ import annotations

from decimal import Decimal

from django.db import models

from controlplane.audit import AuditedModel
from controlplane.crypto import EncryptedTextField, mask
from controlplane.money import money_field


class Provider(AuditedModel):
    class Kind(models.TextChoices):
        OPENROUTER = "openrouter", "OpenRouter"
        OPENAI = "openai", "OpenAI"
        OLLAMA = "ollama", "Ollama"
        VLLM = "vllm", "vLLM"
        COMPATIBLE = "compatible", "OpenAI-compatible"
        ANTHROPIC = "anthropic", "Anthropic (Messages API)"
        OFFLINE = "offline", "Offline (no network)"

    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=12, choices=Kind.choices)
    base_url = models.URLField(
        blank=True,
        help_text="e.g. https://openrouter.ai/api/v1; for Anthropic https://api.anthropic.com",
    )
    api_key = EncryptedTextField(blank=True, help_text="Stored encrypted; never shown in full.")
    enabled = models.BooleanField(default=True)
    timeout_seconds = models.PositiveIntegerField(default=60)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_offline(self) -> bool:
        return self.kind == self.Kind.OFFLINE

    @property
    def masked_api_key(self) -> str:
        return mask(self.api_key)


class AIModel(AuditedModel):
    """One model of the catalog. Prices are USD per token; None means unknown."""

    PRICE_FIELDS = (
        "price_prompt",
        "price_completion",
        "price_cache_read",
        "price_cache_write",
        "price_reasoning",
        "price_request",
    )

    class Source(models.TextChoices):
        SEED = "seed", "Offline seed catalog"
        OPENROUTER = "openrouter", "OpenRouter sync"
        MANUAL = "manual", "Added by hand"

    provider = models.ForeignKey(Provider, on_delete=models.PROTECT, related_name="catalog_models")
    model_id = models.CharField(max_length=200, help_text="As the provider names it.")
    name = models.CharField(max_length=200, blank=True)
    context_length = models.PositiveIntegerField(null=True, blank=True)
    price_prompt = money_field(null=True, blank=True)
    price_completion = money_field(null=True, blank=True)
    price_cache_read = money_field(null=True, blank=True)
    price_cache_write = money_field(null=True, blank=True)
    price_reasoning = money_field(null=True, blank=True)
    price_request = money_field(null=True, blank=True)
    supports_tools = models.BooleanField(default=False)
    capabilities = models.JSONField(default=list, blank=True)
    active = models.BooleanField(default=True)
    source = models.CharField(max_length=12, choices=Source.choices, default=Source.MANUAL)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["provider__name", "model_id"]
        verbose_name = "model"
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "model_id"], name="aimodel_unique_per_provider"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model_id} ({self.provider_id and self.provider.name})"

    @property
    def is_offline(self) -> bool:
        return self.provider.is_offline

    @property
    def price_missing(self) -> bool:
        """Flagged: a model without prompt and completion prices is never priced at zero."""
        if self.provider.is_offline:
            return False
        return self.price_prompt is None or self.price_completion is None

    def price_per_1k(self) -> Decimal | None:
        """Blended price of 1,000 tokens (prompt and completion averaged), for policies."""
        if self.price_missing:
            return None
        if self.provider.is_offline:
            return Decimal(0)
        assert self.price_prompt is not None
        assert self.price_completion is not None
        return (self.price_prompt + self.price_completion) / 2 * 1000
