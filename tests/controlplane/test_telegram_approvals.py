"""Approvals decided from a Telegram message: the buttons decide as the linked staff
member under the web's rules (tier, money needs an Owner, no self-approval, expiry),
cannot be used by another account nor replayed, and the message is edited to show
the outcome wherever the approval was decided, expired or withdrawn."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from controlplane.approvals import (
    ApprovalError,
    decide_approval,
    expire_due_approvals,
    request_approval,
    withdraw_approval,
)
from controlplane.chat_approvals import NOT_YOURS, USED, refresh_approval_messages
from controlplane.models import Approval, AuditEvent, ChatMessage
from controlplane.telegram_integration import client_for
from controlplane.telegram_updates import handle_update
from controlplane.tiers import Tier
from tests.controlplane.races import at_once
from tests.controlplane.telegram_bots import ALICE, MALLORY, bot, linked, telegram
from tests.controlplane.telegram_notices import (
    buttons_of,
    edits_of,
    make_channel,
    messages_to,
    press,
)
from tests.personas import make_user

__all__ = ["bot", "telegram"]  # fixtures

BOB = 7002  # another staff member's Telegram user id


@pytest.fixture(autouse=True)
def _edits_not_spaced(settings: Any) -> None:
    # One test checks the spacing of edits to one chat; the others edit freely.
    settings.TELEGRAM_EDIT_INTERVAL_SECONDS = 0


def ask(requested_by: Any, capture: Any, **fields: Any) -> Approval:
    with capture(execute=True):
        return request_approval(
            action="test.risky-tool",
            requested_by=requested_by,
            reason="Run the <migration> tool",
            **fields,
        )


def the_message(telegram: Any, chat: int) -> dict[str, Any]:
    [message] = messages_to(telegram, chat)
    return message


@pytest.mark.django_db
class TestDecidingByButton:
    def test_approve_decides_as_the_linked_member_and_edits_the_message(
        self, telegram, bot, operator, owner, django_capture_on_commit_callbacks
    ):
        linked(bot, owner, ALICE)
        make_channel()
        approval = ask(operator, django_capture_on_commit_callbacks)
        message = the_message(telegram, ALICE)
        assert "Run the &lt;migration&gt; tool" in message["text"]
        assert set(buttons_of(message)) == {"Approve", "Reject"}

        with django_capture_on_commit_callbacks(execute=True):
            notice = press(
                telegram, bot, buttons_of(message)["Approve"], user_id=ALICE, message=message
            )

        assert notice == f"Approval #{approval.pk} approved."
        approval.refresh_from_db()
        assert approval.status == Approval.Status.APPROVED
        assert approval.decided_by == owner
        assert approval.decision_note == "Decided from Telegram."
        event = AuditEvent.objects.get(action="approval.approved", object_id=str(approval.pk))
        assert event.actor == owner
        [edit] = edits_of(telegram, message)
        assert f"<b>Approved</b> by {owner.get_username()}" in edit["text"]
        assert "reply_markup" not in edit  # the buttons are gone

    def test_reject_decides_and_edits_the_message(
        self, telegram, bot, operator, operator2, django_capture_on_commit_callbacks
    ):
        linked(bot, operator2, ALICE)
        make_channel()
        approval = ask(operator, django_capture_on_commit_callbacks)
        message = the_message(telegram, ALICE)

        with django_capture_on_commit_callbacks(execute=True):
            notice = press(
                telegram, bot, buttons_of(message)["Reject"], user_id=ALICE, message=message
            )

        assert notice == f"Approval #{approval.pk} rejected."
        approval.refresh_from_db()
        assert (approval.status, approval.decided_by) == (Approval.Status.REJECTED, operator2)
        [edit] = edits_of(telegram, message)
        assert f"<b>Rejected</b> by {operator2.get_username()}" in edit["text"]


@pytest.mark.django_db
class TestRefusedPresses:
    def test_an_unlinked_account_is_refused(
        self, telegram, bot, operator, owner, django_capture_on_commit_callbacks
    ):
        linked(bot, owner, ALICE)
        make_channel()
        approval = ask(operator, django_capture_on_commit_callbacks)
        message = the_message(telegram, ALICE)

        notice = press(
            telegram, bot, buttons_of(message)["Approve"], user_id=MALLORY, message=message
        )

        assert "not linked" in notice
        assert Approval.objects.get(pk=approval.pk).is_pending

    def test_the_requester_cannot_approve_their_own_request(
        self, telegram, bot, operator, django_capture_on_commit_callbacks
    ):
        linked(bot, operator, ALICE)
        make_channel()
        approval = ask(operator, django_capture_on_commit_callbacks)
        message = the_message(telegram, ALICE)

        notice = press(
            telegram, bot, buttons_of(message)["Approve"], user_id=ALICE, message=message
        )

        assert "Nobody can decide their own request" in notice
        assert Approval.objects.get(pk=approval.pk).is_pending
        assert not AuditEvent.objects.filter(action="approval.approved").exists()

    def test_an_operator_cannot_decide_money(
        self, telegram, bot, operator, operator2, owner, django_capture_on_commit_callbacks
    ):
        linked(bot, operator2, ALICE)
        linked(bot, owner, BOB)
        make_channel()
        approval = ask(operator, django_capture_on_commit_callbacks, amount=Decimal("250"))
        message = the_message(telegram, ALICE)

        notice = press(
            telegram, bot, buttons_of(message)["Approve"], user_id=ALICE, message=message
        )

        assert "needs the Owner tier" in notice
        assert Approval.objects.get(pk=approval.pk).is_pending
        # The Owner's button decides it.
        owners = the_message(telegram, BOB)
        assert "$250" in owners["text"]
        notice = press(telegram, bot, buttons_of(owners)["Approve"], user_id=BOB, message=owners)
        assert Approval.objects.get(pk=approval.pk).status == Approval.Status.APPROVED

    def test_an_expired_request_is_refused(
        self, telegram, bot, operator, owner, django_capture_on_commit_callbacks
    ):
        linked(bot, owner, ALICE)
        make_channel()
        approval = ask(operator, django_capture_on_commit_callbacks)
        message = the_message(telegram, ALICE)
        Approval.objects.filter(pk=approval.pk).update(
            expires_at=timezone.now() - timedelta(minutes=1)
        )

        notice = press(
            telegram, bot, buttons_of(message)["Approve"], user_id=ALICE, message=message
        )

        assert "expired" in notice
        assert Approval.objects.get(pk=approval.pk).status == Approval.Status.PENDING

    def test_a_replayed_callback_decides_nothing_more(
        self, telegram, bot, operator, owner, django_capture_on_commit_callbacks
    ):
        linked(bot, owner, ALICE)
        make_channel()
        approval = ask(operator, django_capture_on_commit_callbacks)
        message = the_message(telegram, ALICE)
        approve, reject = buttons_of(message)["Approve"], buttons_of(message)["Reject"]
        press(telegram, bot, approve, user_id=ALICE, message=message)

        assert press(telegram, bot, approve, user_id=ALICE, message=message) == USED
        assert press(telegram, bot, reject, user_id=ALICE, message=message) == USED
        approval.refresh_from_db()
        assert approval.status == Approval.Status.APPROVED
        decisions = AuditEvent.objects.filter(
            action__in=["approval.approved", "approval.rejected"], object_id=str(approval.pk)
        )
        assert decisions.count() == 1

    def test_a_button_pressed_by_another_account_is_refused_and_stays_good(
        self, telegram, bot, operator, owner, owner2, django_capture_on_commit_callbacks
    ):
        linked(bot, owner, ALICE)
        linked(bot, owner2, MALLORY)  # linked staff, but the button is not theirs
        make_channel()
        approval = ask(operator, django_capture_on_commit_callbacks)
        alices = the_message(telegram, ALICE)
        data = buttons_of(alices)["Approve"]

        # Alice's data from Mallory's chat, and as if from Alice's chat.
        assert press(telegram, bot, data, user_id=MALLORY, message=alices) == NOT_YOURS
        assert (
            press(telegram, bot, data, user_id=MALLORY, message=alices, chat_id=ALICE) == NOT_YOURS
        )
        # Under another message of Alice's chat.
        other = {**alices, "message_id": alices["message_id"] + 1000}
        assert press(telegram, bot, data, user_id=ALICE, message=other) == NOT_YOURS
        assert Approval.objects.get(pk=approval.pk).is_pending

        assert press(telegram, bot, data, user_id=ALICE, message=alices).endswith("approved.")
        assert Approval.objects.get(pk=approval.pk).decided_by == owner

    def test_made_up_button_data_is_stale(
        self, telegram, bot, operator, owner, django_capture_on_commit_callbacks
    ):
        linked(bot, owner, ALICE)
        make_channel()
        ask(operator, django_capture_on_commit_callbacks)
        message = the_message(telegram, ALICE)
        for data in ("apv:a:forged-token", "apv:x", "apv:z:" + "A" * 24):
            assert "no longer works" in press(telegram, bot, data, user_id=ALICE, message=message)


@pytest.mark.django_db
class TestMessagesFollowTheApproval:
    def test_edited_after_a_decision_on_the_web(
        self, telegram, bot, operator, owner, owner2, django_capture_on_commit_callbacks
    ):
        linked(bot, owner, ALICE)
        make_channel()
        approval = ask(operator, django_capture_on_commit_callbacks)
        message = the_message(telegram, ALICE)
        web = Client()
        web.force_login(owner2)

        with django_capture_on_commit_callbacks(execute=True):
            response = web.post(f"/approvals/{approval.pk}/decide/", {"decision": "reject"})

        assert response.status_code == 302
        [edit] = edits_of(telegram, message)
        assert f"<b>Rejected</b> by {owner2.get_username()}" in edit["text"]
        assert "reply_markup" not in edit
        # The button no longer decides anything.
        notice = press(
            telegram, bot, buttons_of(message)["Approve"], user_id=ALICE, message=message
        )
        assert "already rejected" in notice

    def test_edited_after_expiry_and_after_withdrawal(
        self, telegram, bot, operator, owner, django_capture_on_commit_callbacks
    ):
        linked(bot, owner, ALICE)
        make_channel()
        expiring = ask(operator, django_capture_on_commit_callbacks)
        withdrawn = ask(operator, django_capture_on_commit_callbacks)
        first, second = messages_to(telegram, ALICE)
        Approval.objects.filter(pk=expiring.pk).update(
            expires_at=timezone.now() - timedelta(minutes=1)
        )

        with django_capture_on_commit_callbacks(execute=True):
            assert expire_due_approvals() == 1
        with django_capture_on_commit_callbacks(execute=True):
            assert withdraw_approval(withdrawn.pk, why="the run was stopped")

        assert "<b>Expired</b>" in edits_of(telegram, first)[0]["text"]
        assert "<b>Withdrawn</b>: the run was stopped" in edits_of(telegram, second)[0]["text"]

    def test_edits_to_one_chat_are_spaced(
        self, settings, telegram, bot, operator, owner, django_capture_on_commit_callbacks
    ):
        settings.TELEGRAM_EDIT_INTERVAL_SECONDS = 1
        linked(bot, owner, ALICE)
        make_channel()
        approvals = [ask(operator, django_capture_on_commit_callbacks) for _ in range(2)]
        with django_capture_on_commit_callbacks(execute=True):
            for approval in approvals:
                decide_approval(approval, user=owner, approve=True)

        assert len(telegram.edited) == 1
        held = ChatMessage.objects.get(approval=approvals[1])
        assert held.edit_due_at is not None
        assert held.edit_due_at > timezone.now()
        # Once it is due, the approvals' periodic pass makes it.
        ChatMessage.objects.filter(pk=held.pk).update(edit_due_at=timezone.now())
        cache.clear()  # the chat's spacing is over
        assert refresh_approval_messages() == 1
        assert len(telegram.edited) == 2

    def test_a_rate_limited_edit_waits_retry_after_then_is_made(
        self, telegram, bot, operator, owner, django_capture_on_commit_callbacks
    ):
        linked(bot, owner, ALICE)
        make_channel()
        approval = ask(operator, django_capture_on_commit_callbacks)
        message = the_message(telegram, ALICE)
        telegram.fail(telegram.rate_limited(retry_after=30))

        with django_capture_on_commit_callbacks(execute=True):
            decide_approval(approval, user=owner, approve=True)

        assert edits_of(telegram, message) == []
        row = ChatMessage.objects.get(approval=approval)
        assert row.edit_due_at is not None
        assert row.edit_due_at >= timezone.now() + timedelta(seconds=25)
        assert refresh_approval_messages() == 0  # not due yet
        ChatMessage.objects.filter(pk=row.pk).update(edit_due_at=timezone.now())
        assert refresh_approval_messages() == 1
        assert "<b>Approved</b>" in edits_of(telegram, message)[0]["text"]


# The web and a button decide the same approval at the same moment.

RACE_ROUNDS = 10


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_web_decision_and_a_button_at_once_have_exactly_one_winner(telegram, bot):
    operator = make_user("oscar-operator", Tier.OPERATOR)
    owner = make_user("wendy-owner", Tier.OWNER)
    owner2 = make_user("walt-owner", Tier.OWNER)
    linked(bot, owner, ALICE)
    make_channel()
    for round_number in range(RACE_ROUNDS):
        approval = request_approval(action="test.risky-tool", requested_by=operator, reason="race")
        message = messages_to(telegram, ALICE)[-1]
        data = buttons_of(message)["Approve"]
        update = telegram.update(
            {
                "callback_query": {
                    "id": f"race-{round_number}",
                    "from": {"id": ALICE, "is_bot": False, "first_name": "A"},
                    "message": {
                        "message_id": message["message_id"],
                        "date": 1_800_000_000,
                        "chat": {"id": ALICE, "type": "private"},
                    },
                    "data": data,
                }
            }
        )
        before = len(telegram.answered)

        def by_button(update: dict[str, Any] = update) -> str:
            with client_for(bot) as client:
                return handle_update(bot, update, client)

        def on_the_web(approval: Approval = approval) -> str:
            decider = get_user_model().objects.get(pk=owner2.pk)
            try:
                decide_approval(Approval.objects.get(pk=approval.pk), user=decider, approve=False)
            except ApprovalError:
                return "web refused"
            return "web won"

        outcomes = at_once(by_button, on_the_web)

        assert not [o for o in outcomes if o.startswith("crashed")], outcomes
        approval.refresh_from_db()
        [answer] = telegram.answered[before:]
        button_won = answer["text"] == f"Approval #{approval.pk} approved."
        web_won = "web won" in outcomes
        assert button_won != web_won, f"round {round_number}: {outcomes}, {answer}"
        expected = (owner, Approval.Status.APPROVED) if button_won else (owner2, "rejected")
        assert (approval.decided_by, approval.status) == expected
        decisions = AuditEvent.objects.filter(
            action__in=["approval.approved", "approval.rejected"], object_id=str(approval.pk)
        )
        assert decisions.count() == 1
        # The message ends up showing the winner.
        last_edit = edits_of(telegram, message)[-1]
        assert f"by {expected[0].get_username()}" in last_edit["text"]


@pytest.mark.django_db
def test_an_approval_sent_to_one_member_has_working_buttons(
    telegram, bot, operator, owner, django_capture_on_commit_callbacks
):
    from controlplane.chat_channel import send_approval_message

    account = linked(bot, owner, ALICE)
    approval = ask(operator, django_capture_on_commit_callbacks)  # no channel: no message
    assert telegram.sent == []

    send_approval_message(account, approval)

    message = the_message(telegram, ALICE)
    with django_capture_on_commit_callbacks(execute=True):
        notice = press(
            telegram, bot, buttons_of(message)["Approve"], user_id=ALICE, message=message
        )
    assert notice == f"Approval #{approval.pk} approved."
    assert "<b>Approved</b>" in edits_of(telegram, message)[0]["text"]
