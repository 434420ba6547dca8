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
        OFFLINE = "offline", "Offline (no network)"

    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=12, choices=Kind.choices)
    base_url = models.URLField(blank=True, help_text="e.g. https://openrouter.ai/api/v1")
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


class CallKind(models.TextChoices):
    """What an AI call does, and so what it is priced by: chat in tokens (and the images,
    audio and video seconds its messages carry), embeddings in input tokens,
    transcription in seconds of audio, speech in characters of text."""

    CHAT = "chat", "Chat"
    EMBEDDING = "embedding", "Embeddings"
    TRANSCRIPTION = "transcription", "Transcription"
    SPEECH = "speech", "Speech"


# The prices a call of each kind is charged by: a model lacking one of its kind's is
# flagged and not routed to.
KIND_PRICES: dict[str, tuple[str, ...]] = {
    CallKind.CHAT: ("price_prompt", "price_completion"),
    CallKind.EMBEDDING: ("price_prompt",),
    CallKind.TRANSCRIPTION: ("price_audio_second",),
    CallKind.SPEECH: ("price_character",),
}
# The units of a call besides tokens (fields of `Usage` and `OperationLog`), and the
# price of each. A chat whose messages carry one of them needs its price too.
UNIT_PRICES: dict[str, str] = {
    "images": "price_image",
    "audio_seconds": "price_audio_second",
    "video_seconds": "price_video_second",
    "characters": "price_character",
}


class AIModel(AuditedModel):
    """One model of the catalog. Prices are USD per unit (a token unless the field
    names another unit); None means unknown. A model serves calls of its `kind`; the
    offline provider's models serve every kind."""

    PRICE_FIELDS = (
        "price_prompt",
        "price_completion",
        "price_cache_read",
        "price_cache_write",
        "price_reasoning",
        "price_request",
        "price_image",
        "price_audio_second",
        "price_video_second",
        "price_character",
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
    price_image = money_field(null=True, blank=True, help_text="USD per input image.")
    price_audio_second = money_field(
        null=True, blank=True, help_text="USD per second of input audio."
    )
    price_video_second = money_field(
        null=True, blank=True, help_text="USD per second of input video."
    )
    price_character = money_field(
        null=True, blank=True, help_text="USD per character of text spoken (speech)."
    )
    kind = models.CharField(
        max_length=16,
        choices=CallKind.choices,
        default=CallKind.CHAT,
        help_text="The calls this model serves (an offline model serves every kind).",
    )
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
        """Flagged: a model without the prices its kind is charged by (prompt and
        completion for chat) is never priced at zero, nor routed to."""
        if self.provider.is_offline:
            return False
        return any(getattr(self, name) is None for name in KIND_PRICES[self.kind])

    def price_per_1k(self) -> Decimal | None:
        """Blended price of 1,000 tokens (prompt and completion averaged), for policies;
        an embedding model's is its input's. None for a kind not priced in tokens
        (transcription, speech): a policy's cap on token prices does not apply."""
        if self.price_missing:
            return None
        if self.provider.is_offline:
            return Decimal(0)
        if self.kind == CallKind.EMBEDDING:
            assert self.price_prompt is not None
            return self.price_prompt * 1000
        if self.kind != CallKind.CHAT:
            return None
        assert self.price_prompt is not None
        assert self.price_completion is not None
        return (self.price_prompt + self.price_completion) / 2 * 1000
