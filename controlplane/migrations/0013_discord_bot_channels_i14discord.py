"""Discord bot notification channels, and the bot messages of both platforms in one
table: `TelegramMessage` becomes `ChatMessage` (its integration says the platform)."""

import django.db.models.deletion
from django.db import migrations, models

import controlplane.crypto


class Migration(migrations.Migration):
    dependencies = [
        ("controlplane", "0012_telegram_channels_and_approval_messages"),
    ]

    operations = [
        migrations.AlterField(
            model_name="notificationchannel",
            name="kind",
            field=models.CharField(
                choices=[
                    ("discord", "Discord webhook"),
                    ("webhook", "JSON webhook"),
                    ("email", "Email"),
                    ("telegram", "Telegram bot"),
                    ("discord_bot", "Discord bot"),
                ],
                max_length=16,
            ),
        ),
        migrations.AlterField(
            model_name="notificationchannel",
            name="target",
            field=controlplane.crypto.EncryptedTextField(
                help_text="Webhook URL, email address, or for a Telegram or Discord bot: the integration's name and whom to write to (see controlplane.chat_channel)."
            ),
        ),
        migrations.RemoveConstraint(
            model_name="telegrammessage", name="one_row_per_telegram_message"
        ),
        migrations.RemoveConstraint(
            model_name="telegrammessage", name="one_telegram_message_per_delivery_chat"
        ),
        migrations.RenameModel(old_name="TelegramMessage", new_name="ChatMessage"),
        migrations.AlterField(
            model_name="chatmessage",
            name="integration",
            field=models.ForeignKey(
                on_delete=django.db.models.deletion.CASCADE,
                related_name="chat_messages",
                to="controlplane.integration",
            ),
        ),
        migrations.AlterField(
            model_name="chatmessage",
            name="chat_account",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="chat_messages",
                to="controlplane.chataccount",
            ),
        ),
        migrations.AlterField(
            model_name="chatmessage",
            name="delivery",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="chat_messages",
                to="controlplane.notificationdelivery",
            ),
        ),
        migrations.AlterField(
            model_name="chatmessage",
            name="approval",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="chat_messages",
                to="controlplane.approval",
            ),
        ),
        migrations.AddConstraint(
            model_name="chatmessage",
            constraint=models.UniqueConstraint(
                fields=("integration", "chat_id", "message_id"), name="one_row_per_chat_message"
            ),
        ),
        migrations.AddConstraint(
            model_name="chatmessage",
            constraint=models.UniqueConstraint(
                fields=("delivery", "chat_id"), name="one_chat_message_per_delivery_chat"
            ),
        ),
    ]
