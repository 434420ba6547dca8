from __future__ import annotations

from django.db import models

from controlplane.audit import AuditedModel
from controlplane.crypto import EncryptedTextField, mask


class NotificationChannel(AuditedModel):
    class Kind(models.TextChoices):
        DISCORD = "discord", "Discord webhook"
        WEBHOOK = "webhook", "JSON webhook"
        EMAIL = "email", "Email"
        # Messages through a Telegram integration's bot to linked staff members' chats.
        TELEGRAM = "telegram", "Telegram bot"
        # Direct messages through a Discord integration's bot to linked staff members.
        DISCORD_BOT = "discord_bot", "Discord bot"

    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # A webhook URL carries its own credentials, so it is a secret like an API key.
    target = EncryptedTextField(
        help_text="Webhook URL, email address, or for a Telegram or Discord bot: the "
        "integration's name and whom to write to (see controlplane.chat_channel)."
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def masked_target(self) -> str:
        if self.kind in (self.Kind.EMAIL, self.Kind.TELEGRAM, self.Kind.DISCORD_BOT):
            return self.target
        return mask(self.target)


class NotificationDelivery(models.Model):
    """One message to one channel, sent in the background with retries."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SENDING = "sending"
        SENT = "sent"
        FAILED = "failed"

    channel = models.ForeignKey(
        NotificationChannel, on_delete=models.PROTECT, related_name="deliveries"
    )
    dedupe_key = models.CharField(
        max_length=200, db_index=True, help_text="One condition notifies once per window."
    )
    subject = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "notification deliveries"

    def __str__(self) -> str:
        return f"{self.subject} → {self.channel_id} ({self.status})"


class DeliveryAttempt(models.Model):
    delivery = models.ForeignKey(
        NotificationDelivery, on_delete=models.CASCADE, related_name="attempt_log"
    )
    number = models.PositiveIntegerField()
    at = models.DateTimeField(auto_now_add=True)
    ok = models.BooleanField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="delivery_attempt_number")
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} ({'ok' if self.ok else 'failed'})"
