"""Which chat message follows which run: the message a bot keeps updated with a run
started from a chat (`/run`), so that the updates carry on after a restart."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from chat.models.runs import Run


class RunChatMessage(models.Model):
    """One bot message showing one run's status, step and cost, until its final state
    (stop reason, suggestion, link) is shown (`chat.run_messages`)."""

    run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="chat_message")
    platform = models.CharField(max_length=20)  # controlplane.ChatAccount.Platform
    integration = models.ForeignKey(
        "controlplane.Integration", on_delete=models.CASCADE, related_name="+"
    )
    chat_id = models.CharField(max_length=64)
    # Empty until the message is sent (the first refresh sends it, later ones edit it).
    message_id = models.CharField(max_length=64, blank=True)
    shown_text = models.TextField(blank=True, help_text="What the message says now.")
    shown_seq = models.PositiveBigIntegerField(
        default=0, help_text="The run's last event when the message was last written."
    )
    # The earliest moment of the next write: the throttle, and the claim (a refresh
    # moves it forward with one conditional UPDATE before it writes).
    next_write_at = models.DateTimeField(default=timezone.now)
    failures = models.PositiveSmallIntegerField(default=0)
    last_error = models.CharField(max_length=300, blank=True)
    finished_at = models.DateTimeField(
        null=True, blank=True, db_index=True, help_text="The final state was shown (or given up)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Run #{self.run_id} in {self.platform} chat {self.chat_id}"
