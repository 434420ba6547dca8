"""The bot messages sent (Telegram and Discord notifications and approval requests):
visible to every tier in the admin, changed or deleted by nobody there, the buttons'
token hashes never shown; and their records forgotten after
`CHATOPS_MESSAGE_RECORD_DAYS`, except those whose buttons or edit still need them."""

from __future__ import annotations

from datetime import timedelta
from itertools import count
from typing import Any

import pytest
from django.db import connection
from django.db.models import Max
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from controlplane.approvals import decide_approval, request_approval
from controlplane.chat_channel import forget_old_messages
from controlplane.models import Approval, ChatMessage, Integration

pytestmark = pytest.mark.django_db
LIST = "/admin/controlplane/chatmessage/"
_message_ids = count(1)


@pytest.fixture
def discord_bot(db: Any) -> Integration:
    return Integration.objects.create(kind=Integration.Kind.DISCORD, name="ops-discord")


def sent(integration: Integration, approval: Approval | None = None) -> ChatMessage:
    number = next(_message_ids)
    return ChatMessage.objects.create(
        integration=integration,
        chat_id="4400440044004400",
        message_id=900_000_000_000_000_000 + number,
        approval=approval,
        shown_status=approval.status if approval else "",
        button_token_hash=f"{number:064x}" if approval else None,
    )


def logged_in(user: Any) -> Client:
    web = Client()
    web.force_login(user)
    return web


@pytest.mark.parametrize("persona", ["observer", "operator", "owner"])
def test_every_tier_sees_the_messages_read_only(request, persona, discord_bot, operator):
    user = request.getfixturevalue(persona)
    approval = request_approval(action="test.tool", requested_by=operator, reason="please")
    message = sent(discord_bot, approval)
    web = logged_in(user)

    listed = web.get(LIST)
    shown = web.get(f"{LIST}{message.pk}/change/")

    assert listed.status_code == 200
    assert "ops-discord" in listed.content.decode()
    assert shown.status_code == 200
    page = shown.content.decode()
    assert str(message.message_id) in page
    assert message.button_token_hash not in page
    assert 'name="_save"' not in page
    assert web.get(f"{LIST}add/").status_code == 403
    assert web.post(f"{LIST}{message.pk}/delete/", {"post": "yes"}).status_code == 403
    assert ChatMessage.objects.filter(pk=message.pk).exists()


def test_the_list_costs_the_same_queries_for_more_messages(discord_bot, owner, operator):
    web = logged_in(owner)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert web.get(LIST).status_code == 200
        return len(captured)

    approval = request_approval(action="test.tool", requested_by=operator, reason="one")
    sent(discord_bot, approval)
    few = queries()
    for _ in range(5):
        sent(discord_bot, request_approval(action="test.tool", requested_by=operator, reason="n"))
    assert queries() == few


def test_old_records_are_forgotten_unless_their_buttons_or_edit_need_them(
    settings, discord_bot, owner, operator
):
    settings.CHATOPS_MESSAGE_RECORD_DAYS = 30
    long_ago = timezone.now() - timedelta(days=31)
    notification = sent(discord_bot)
    decided = request_approval(action="test.tool", requested_by=operator, reason="decided")
    decide_approval(decided, user=owner, approve=True)
    shown = sent(discord_bot, Approval.objects.get(pk=decided.pk))
    pending = sent(
        discord_bot, request_approval(action="test.tool", requested_by=operator, reason="p")
    )
    edit_due = request_approval(action="test.tool", requested_by=operator, reason="due")
    not_yet_shown = sent(discord_bot, edit_due)
    decide_approval(edit_due, user=owner, approve=False)
    given_up = sent(discord_bot, Approval.objects.get(pk=edit_due.pk))
    ChatMessage.objects.filter(pk=given_up.pk).update(
        shown_status="pending", edit_attempts=settings.NOTIFY_MAX_ATTEMPTS
    )
    ChatMessage.objects.update(sent_at=long_ago)
    recent = sent(discord_bot)

    assert forget_old_messages() == 3

    kept = set(ChatMessage.objects.values_list("pk", flat=True))
    assert kept == {pending.pk, not_yet_shown.pk, recent.pk}
    assert notification.pk not in kept
    assert shown.pk not in kept
    assert ChatMessage.objects.aggregate(Max("sent_at"))["sent_at__max"] > long_ago
