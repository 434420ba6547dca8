"""What the tests of Telegram notification channels and approval buttons share: a
channel writing through the fake bot, the buttons of a sent message, and pressing
one as a Telegram account does (a callback query, fetched by long polling)."""

from __future__ import annotations

from typing import Any

from controlplane.models import Integration, NotificationChannel
from controlplane.telegram_polling import poll_once
from tests.telegram_server import TelegramServer


def make_channel(target: str = "ops-bot", name: str = "ops-telegram") -> NotificationChannel:
    return NotificationChannel.objects.create(
        name=name, kind=NotificationChannel.Kind.TELEGRAM, target=target
    )


def buttons_of(message: dict[str, Any]) -> dict[str, str]:
    """{"Approve": data, "Reject": data} of a message the bot sent (empty: none)."""
    markup = message.get("reply_markup") or {}
    return {
        button["text"]: button["callback_data"]
        for row in markup.get("inline_keyboard", [])
        for button in row
    }


def messages_to(telegram: TelegramServer, chat_id: int) -> list[dict[str, Any]]:
    return [m for m in telegram.sent if str(m["chat_id"]) == str(chat_id)]


def edits_of(telegram: TelegramServer, message: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        e
        for e in telegram.edited
        if e["message_id"] == message["message_id"] and str(e["chat_id"]) == str(message["chat_id"])
    ]


def press(
    telegram: TelegramServer,
    integration: Integration,
    data: str,
    *,
    user_id: int,
    message: dict[str, Any],
    chat_id: int | None = None,
) -> str:
    """Press a button with `data` under `message` as Telegram user `user_id` (in that
    user's private chat unless `chat_id`); the notice the bot answered with."""
    before = len(telegram.answered)
    telegram.queue(
        {
            "callback_query": {
                "id": f"cq-{len(telegram.calls)}",
                "from": {"id": user_id, "is_bot": False, "first_name": "Someone"},
                "message": {
                    "message_id": message["message_id"],
                    "date": 1_800_000_000,
                    "chat": {"id": chat_id if chat_id is not None else user_id, "type": "private"},
                    "text": "…",
                },
                "chat_instance": "1",
                "data": data,
            }
        }
    )
    poll_once(integration, timeout=0)
    answers = telegram.answered[before:]
    assert len(answers) == 1, answers
    return str(answers[0].get("text", ""))
