"""Staff members' chat accounts (Telegram now, Discord later), the one-time codes
that link them, and the Telegram updates already handled.

A chat account is linked to one staff member through one bot (an `Integration`):
what the member may do from the chat is what their tiers let them do on the web.
Linking and unlinking are audited by `controlplane.chat_accounts`, which is the only
code that creates or deletes these rows.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ChatAccount(models.Model):
    class Platform(models.TextChoices):
        TELEGRAM = "telegram", "Telegram"
        DISCORD = "discord", "Discord"

    platform = models.CharField(max_length=20, choices=Platform.choices)
    # The bot it talks to: replies and notifications go out through it.
    integration = models.ForeignKey(
        "controlplane.Integration", on_delete=models.CASCADE, related_name="chat_accounts"
    )
    platform_user_id = models.CharField(max_length=64)
    chat_id = models.CharField(max_length=64, help_text="Where the bot writes to this person.")
    display_name = models.CharField(max_length=200, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_accounts"
    )
    linked_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["platform", "linked_at"]
        constraints = [
            # One chat account answers for one staff member, per bot.
            models.UniqueConstraint(
                fields=["integration", "platform_user_id"], name="one_link_per_chat_account"
            )
        ]

    def __str__(self) -> str:
        who = self.display_name or self.platform_user_id
        return f"{self.get_platform_display()} {who}"


class LinkCode(models.Model):
    """A one-time code a staff member sends to the bot (`/link CODE`). Only its HMAC
    is stored; it is good once, until `expires_at`."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="link_codes"
    )
    code_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"link code of {self.user_id} until {self.expires_at:%H:%M}"


class TelegramUpdate(models.Model):
    """An update a bot received and handled, kept by its `update_id`: the unique
    constraint makes handling it twice impossible (a webhook retried, two pollers),
    and the highest one is where long polling resumes after a restart."""

    integration = models.ForeignKey(
        "controlplane.Integration", on_delete=models.CASCADE, related_name="telegram_updates"
    )
    update_id = models.BigIntegerField()
    kind = models.CharField(max_length=40, blank=True, help_text="message, callback_query, ...")
    outcome = models.CharField(max_length=200, blank=True)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-update_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["integration", "update_id"], name="one_record_per_telegram_update"
            )
        ]

    def __str__(self) -> str:
        return f"update {self.update_id} ({self.kind or 'unknown'})"
