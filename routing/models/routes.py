from __future__ import annotations

from django.core.validators import MaxValueValidator, RegexValidator
from django.db import models

from controlplane.audit import AuditedModel
from controlplane.money import money_field
from routing.models.catalog import AIModel, Provider


class Mode(models.TextChoices):
    NORMAL = "normal", "Normal"
    DEEP_RESEARCH = "deep_research", "Deep research"
    CODE = "code", "Code"
    OPS = "ops", "Ops"


class Policy(AuditedModel):
    """What a mode allows: which models, how dear, how long a run may go."""

    mode = models.CharField(max_length=20, choices=Mode.choices, unique=True)
    description = models.TextField(blank=True)
    preferred_provider = models.ForeignKey(
        Provider, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    preferred_model = models.ForeignKey(
        AIModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    max_price_per_1k = money_field(
        null=True, blank=True, help_text="USD per 1,000 tokens (prompt and completion averaged)."
    )
    max_context = models.PositiveIntegerField(null=True, blank=True)
    max_iterations = models.PositiveIntegerField(default=10)
    max_cost_per_run = money_field(null=True, blank=True, help_text="USD per agent run.")
    max_wall_clock_seconds = models.PositiveIntegerField(default=300)

    class Meta:
        ordering = ["mode"]
        verbose_name_plural = "policies"

    def __str__(self) -> str:
        return self.get_mode_display()


# How operations are named: the gateway refuses an `X-Operation` named otherwise.
OPERATION_NAME = r"[a-z0-9_.-]+"
operation_name = RegexValidator(f"^{OPERATION_NAME}$", "Use lowercase letters, digits, . _ and -.")


class UpstreamApi(models.TextChoices):
    """Which API a route's calls speak to an OpenAI-compatible provider."""

    CHAT_COMPLETIONS = "chat_completions", "Chat completions (/chat/completions)"
    RESPONSES = "responses", "Responses (/responses)"


class Route(AuditedModel):
    operation = models.CharField(max_length=100, unique=True, validators=[operation_name])
    description = models.TextField(blank=True)
    primary_model = models.ForeignKey(AIModel, on_delete=models.PROTECT, related_name="+")
    fallbacks = models.ManyToManyField(
        AIModel, through="RouteFallback", related_name="+", blank=True
    )
    policy = models.ForeignKey(
        Policy,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Used when a call names no mode.",
    )
    # Approval rules
    spends_money = models.BooleanField(
        default=False, help_text="Every call needs an Owner's approval (it spends money)."
    )
    irreversible = models.BooleanField(
        default=False, help_text="Every call needs approval (its effects cannot be undone)."
    )
    approval_threshold = money_field(
        null=True, blank=True, help_text="USD: a call estimated above this needs approval."
    )
    # A/B split: a share of calls goes to a second model, compared on the dashboards.
    ab_model = models.ForeignKey(
        AIModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    ab_percent = models.PositiveSmallIntegerField(default=0, validators=[MaxValueValidator(100)])
    api = models.CharField(
        "upstream API",
        max_length=20,
        choices=UpstreamApi.choices,
        default=UpstreamApi.CHAT_COMPLETIONS,
        help_text="What the calls speak to an OpenAI-compatible provider: some models "
        "(OpenAI's newest) are best or only served by the Responses API. Callers and the "
        "agent loop see the same answers either way.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["operation"]

    def __str__(self) -> str:
        return self.operation


class RouteFallback(models.Model):
    route = models.ForeignKey(Route, on_delete=models.CASCADE, related_name="fallback_links")
    model = models.ForeignKey(AIModel, on_delete=models.PROTECT, related_name="+")
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["route", "position"]
        constraints = [
            models.UniqueConstraint(fields=["route", "model"], name="route_fallback_once")
        ]

    def __str__(self) -> str:
        return f"{self.route_id} #{self.position}: {self.model_id}"
