"""Messages a bot (Telegram's or Discord's: the integration says which) sent to a
chat on the product's behalf (notifications, approval
requests), kept so they can be found again: a notification's retry skips the chats
it already reached, and an approval's messages are edited when it is decided,
expires or is withdrawn, wherever that happened.

An approval message carries Approve and Reject buttons whose callback data is an
opaque random token; only its SHA-256 is kept (`button_token_hash`), bound to this
row (the bot, the chat, the message and the chat account it was sent to), and it is
used once (`button_used_at`).
"""

from __future__ import annotations

from django.db import models


class ChatMessage(models.Model):
    integration = models.ForeignKey(
        "controlplane.Integration", on_delete=models.CASCADE, related_name="chat_messages"
    )
    chat_id = models.CharField(max_length=64)
    message_id = models.BigIntegerField()
    # The staff member's chat account it went to; none for a chat given by id (a group).
    chat_account = models.ForeignKey(
        "controlplane.ChatAccount",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="chat_messages",
    )
    delivery = models.ForeignKey(
        "controlplane.NotificationDelivery",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="chat_messages",
    )
    approval = models.ForeignKey(
        "controlplane.Approval",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="chat_messages",
    )
    button_token_hash = models.CharField(max_length=64, null=True, blank=True, unique=True)
    button_used_at = models.DateTimeField(null=True, blank=True)
    # The approval status the message shows; an edit is due while it differs.
    shown_status = models.CharField(max_length=10, blank=True)
    # An edit held back (Telegram's rate limit, an outage) is not made before this.
    edit_due_at = models.DateTimeField(null=True, blank=True)
    edit_attempts = models.PositiveSmallIntegerField(default=0)
    sent_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-sent_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["integration", "chat_id", "message_id"], name="one_row_per_chat_message"
            ),
            # A delivery's retry never writes twice to a chat it reached.
            models.UniqueConstraint(
                fields=["delivery", "chat_id"], name="one_chat_message_per_delivery_chat"
            ),
        ]

    def __str__(self) -> str:
        return f"message {self.message_id} in chat {self.chat_id}"
