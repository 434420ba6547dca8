"""Approvals decided from a Discord message, against the fake Discord API with
interactions signed by a key the test makes: the buttons decide as the linked staff
member under the web's rules (tier, money needs an Owner, no self-approval, expiry,
one winner), cannot be used by another account nor replayed, a forged signature
decides nothing, and the message is edited to show the outcome wherever the approval
was decided, expired or withdrawn."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.contrib.auth import get_user_model
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
from controlplane.discord_interactions import respond
from controlplane.models import Approval, AuditEvent, ChatMessage
from controlplane.tiers import Tier
from tests.controlplane.discord_bots import (
    ALICE,
    DM_CHANNEL,
    MALLORY,
    app,
    button_press,
    discord,
    linked,
    post_interaction,
    signed_headers,
    signing_key,
)
from tests.controlplane.discord_notices import (
    buttons_of,
    edits_of,
    make_channel,
    messages_to,
    notice,
    press,
)
from tests.controlplane.races import at_once
from tests.personas import make_user

__all__ = ["app", "discord", "signing_key"]  # fixtures

BOB = "7700770077007700"  # another staff member's Discord user id
BOBS_DM = "4411441144114411"


@pytest.fixture(autouse=True)
def _edits_not_spaced(settings: Any) -> None:
    settings.TELEGRAM_EDIT_INTERVAL_SECONDS = 0


@pytest.fixture(autouse=True)
def _direct_channels(discord: Any) -> None:
    # The DM channels Discord has (or opens) between the bot and each user.
    discord.direct_channels.update({ALICE: DM_CHANNEL, BOB: BOBS_DM})


def ask(requested_by: Any, capture: Any, **fields: Any) -> Approval:
    with capture(execute=True):
        return request_approval(
            action="test.risky-tool",
            requested_by=requested_by,
            reason="Run the *migration* tool",
            **fields,
        )


def the_message(discord: Any, channel_id: str = DM_CHANNEL) -> dict[str, Any]:
    [message] = messages_to(discord, channel_id)
    return message


@pytest.mark.django_db
class TestDecidingByButton:
    def test_approve_decides_as_the_linked_member_and_edits_the_message(
        self, client, discord, app, signing_key, operator, owner, django_capture_on_commit_callbacks
    ):
        linked(app, owner, ALICE, chat_id="5500550055005500")  # linked from a server
        make_channel()
        approval = ask(operator, django_capture_on_commit_callbacks)
        # The notification went to Alice's direct messages, opened by the bot.
        assert discord.posted("POST")[0].path == "/users/@me/channels"
        message = the_message(discord)
        assert "Run the \\*migration\\* tool" in message["content"]
        assert message["allowed_mentions"] == {"parse": []}
        assert set(buttons_of(message)) == {"Approve", "Reject"}

        with django_capture_on_commit_callbacks(execute=True):
            response = press(client, app, signing_key, buttons_of(message)["Approve"], message)

        assert notice(response) == f"Approval #{approval.pk} approved."
        approval.refresh_from_db()
        assert (approval.status, approval.decided_by) == (Approval.Status.APPROVED, owner)
        assert approval.decision_note == "Decided from Discord."
        event = AuditEvent.objects.get(action="approval.approved", object_id=str(approval.pk))
        assert event.actor == owner
        [edit] = edits_of(discord, message)
        assert f"**Approved** by {owner.get_username()}" in edit["content"]
        assert edit["components"] == []  # the buttons are gone

    def test_reject_decides_and_edits_the_message(
        self,
        client,
        discord,
        app,
        signing_key,
        operator,
        operator2,
        django_capture_on_commit_callbacks,
    ):
        linked(app, operator2, ALICE)
        make_channel()
        approval = ask(operator, django_capture_on_commit_callbacks)
        message = the_message(discord)

        with django_capture_on_commit_callbacks(execute=True):
            response = press(client, app, signing_key, buttons_of(message)["Reject"], message)

        assert notice(response) == f"Approval #{approval.pk} rejected."
        approval.refresh_from_db()
        assert (approval.status, approval.decided_by) == (Approval.Status.REJECTED, operator2)
        [edit] = edits_of(discord, message)
        assert f"**Rejected** by {operator2.get_username()}" in edit["content"]


@pytest.mark.django_db
class TestRefusedPresses:
    def test_an_unlinked_account_is_refused(
        self, client, discord, app, signing_key, operator, owner, django_capture_on_commit_callbacks
    ):
        linked(app, owner, ALICE)
        make_channel()
        approval = ask(operator, django_capture_on_commit_callbacks)
        message = the_message(discord)

        response = press(
            client, app, signing_key, buttons_of(message)["Approve"], message, user_id=MALLORY
        )

        assert "not linked" in notice(response)
        assert Approval.objects.get(pk=approval.pk).is_pending

    def test_the_requester_cannot_approve_their_own_request(
        self, client, discord, app, signing_key, operator, django_capture_on_commit_callbacks
    ):
        linked(app, operator, ALICE)
        make_channel()
        approval = ask(operator, django_capture_on_commit_callbacks)
        message = the_message(discord)

        response = press(client, app, signing_key, buttons_of(message)["Approve"], message)

        assert "Nobody can decide their own request" in notice(response)
        assert Approval.objects.get(pk=approval.pk).is_pending
        assert not AuditEvent.objects.filter(action="approval.approved").exists()

    def test_an_operator_cannot_decide_money_and_the_owner_can(
        self,
        client,
        discord,
        app,
        signing_key,
        operator,
        operator2,
        owner,
        django_capture_on_commit_callbacks,
    ):
        linked(app, operator2, ALICE)
        linked(app, owner, BOB, chat_id=BOBS_DM)
        make_channel()
        approval = ask(operator, django_capture_on_commit_callbacks, amount=Decimal("250"))
        message = the_message(discord)

        response = press(client, app, signing_key, buttons_of(message)["Approve"], message)

        assert "needs the Owner tier" in notice(response)
        assert Approval.objects.get(pk=approval.pk).is_pending
        owners = the_message(discord, BOBS_DM)
        assert "$250" in owners["content"]
        response = press(
            client, app, signing_key, buttons_of(owners)["Approve"], owners, user_id=BOB
        )
        assert notice(response) == f"Approval #{approval.pk} approved."
        assert Approval.objects.get(pk=approval.pk).decided_by == owner

    def test_an_expired_request_is_refused(
        self, client, discord, app, signing_key, operator, owner, django_capture_on_commit_callbacks
    ):
        linked(app, owner, ALICE)
        make_channel()
        approval = ask(operator, django_capture_on_commit_callbacks)
        message = the_message(discord)
        Approval.objects.filter(pk=approval.pk).update(
            expires_at=timezone.now() - timedelta(minutes=1)
        )

        response = press(client, app, signing_key, buttons_of(message)["Approve"], message)

        assert "expired" in notice(response)
        assert Approval.objects.get(pk=approval.pk).status == Approval.Status.PENDING

    def test_a_replayed_press_decides_nothing_more(
        self, client, discord, app, signing_key, operator, owner, django_capture_on_commit_callbacks
    ):
        linked(app, owner, ALICE)
        make_channel()
        approval = ask(operator, django_capture_on_commit_callbacks)
        message = the_message(discord)
        approve, reject = buttons_of(message)["Approve"], buttons_of(message)["Reject"]
        interaction = button_press(approve, message["id"], channel_id=DM_CHANNEL)
        body = json.dumps(interaction).encode()
        headers = signed_headers(signing_key, body)
        first = post_interaction(client, app, signing_key, body, headers=headers)
        assert notice(first) == f"Approval #{approval.pk} approved."

        # The same signed request again is refused outright; a new press finds it used.
        again = post_interaction(client, app, signing_key, body, headers=headers)
        assert again.status_code == 401
        assert notice(press(client, app, signing_key, approve, message)) == USED
        assert notice(press(client, app, signing_key, reject, message)) == USED
        approval.refresh_from_db()
        assert approval.status == Approval.Status.APPROVED
        decisions = AuditEvent.objects.filter(
            action__in=["approval.approved", "approval.rejected"], object_id=str(approval.pk)
        )
        assert decisions.count() == 1

    def test_a_forged_signature_decides_nothing(
        self, client, discord, app, signing_key, operator, owner, django_capture_on_commit_callbacks
    ):
        linked(app, owner, ALICE)
        make_channel()
        approval = ask(operator, django_capture_on_commit_callbacks)
        message = the_message(discord)
        forger = Ed25519PrivateKey.generate()

        response = press(client, app, forger, buttons_of(message)["Approve"], message)

        assert response.status_code == 401
        assert Approval.objects.get(pk=approval.pk).is_pending
        # The button stays good for Alice.
        response = press(client, app, signing_key, buttons_of(message)["Approve"], message)
        assert notice(response) == f"Approval #{approval.pk} approved."

    def test_a_button_pressed_by_another_account_is_refused_and_stays_good(
        self,
        client,
        discord,
        app,
        signing_key,
        operator,
        owner,
        owner2,
        django_capture_on_commit_callbacks,
    ):
        linked(app, owner, ALICE)
        linked(app, owner2, BOB, chat_id=BOBS_DM)  # linked staff, but not their button
        make_channel()
        approval = ask(operator, django_capture_on_commit_callbacks)
        alices = the_message(discord)
        data = buttons_of(alices)["Approve"]

        # Alice's button from Bob's DM, and as if from Alice's channel.
        for channel in (BOBS_DM, DM_CHANNEL):
            response = press(
                client, app, signing_key, data, alices, user_id=BOB, channel_id=channel
            )
            assert notice(response) == NOT_YOURS
        # Under another message of Alice's channel.
        other = {**alices, "id": str(int(alices["id"]) + 1000)}
        assert notice(press(client, app, signing_key, data, other)) == NOT_YOURS
        assert Approval.objects.get(pk=approval.pk).is_pending

        assert notice(press(client, app, signing_key, data, alices)).endswith("approved.")
        assert Approval.objects.get(pk=approval.pk).decided_by == owner


@pytest.mark.django_db
class TestMessagesFollowTheApproval:
    def test_edited_after_a_decision_on_the_web(
        self,
        client,
        discord,
        app,
        signing_key,
        operator,
        owner,
        owner2,
        django_capture_on_commit_callbacks,
    ):
        linked(app, owner, ALICE)
        make_channel()
        approval = ask(operator, django_capture_on_commit_callbacks)
        message = the_message(discord)
        approve = buttons_of(message)["Approve"]
        web = Client()
        web.force_login(owner2)

        with django_capture_on_commit_callbacks(execute=True):
            response = web.post(f"/approvals/{approval.pk}/decide/", {"decision": "reject"})

        assert response.status_code == 302
        [edit] = edits_of(discord, message)
        assert f"**Rejected** by {owner2.get_username()}" in edit["content"]
        assert edit["components"] == []
        assert "already rejected" in notice(press(client, app, signing_key, approve, message))

    def test_edited_after_expiry_and_after_withdrawal(
        self, discord, app, operator, owner, django_capture_on_commit_callbacks
    ):
        linked(app, owner, ALICE)
        make_channel()
        expiring = ask(operator, django_capture_on_commit_callbacks)
        withdrawn = ask(operator, django_capture_on_commit_callbacks)
        first, second = messages_to(discord, DM_CHANNEL)
        Approval.objects.filter(pk=expiring.pk).update(
            expires_at=timezone.now() - timedelta(minutes=1)
        )

        with django_capture_on_commit_callbacks(execute=True):
            assert expire_due_approvals() == 1
        with django_capture_on_commit_callbacks(execute=True):
            assert withdraw_approval(withdrawn.pk, why="the run was stopped")

        assert "**Expired**" in edits_of(discord, first)[0]["content"]
        assert "**Withdrawn**: the run was stopped" in edits_of(discord, second)[0]["content"]

    def test_a_rate_limited_edit_waits_and_is_made_by_a_later_pass(
        self, discord, app, operator, owner, django_capture_on_commit_callbacks
    ):
        linked(app, owner, ALICE)
        make_channel()
        approval = ask(operator, django_capture_on_commit_callbacks)
        message = the_message(discord)
        discord.fail(discord.rate_limited(retry_after=30))

        with django_capture_on_commit_callbacks(execute=True):
            decide_approval(approval, user=owner, approve=True)

        assert edits_of(discord, message) == []
        row = ChatMessage.objects.get(approval=approval)
        assert row.edit_due_at is not None
        assert row.edit_due_at > timezone.now()
        ChatMessage.objects.filter(pk=row.pk).update(edit_due_at=timezone.now())

        assert refresh_approval_messages() == 1
        assert "**Approved**" in edits_of(discord, message)[0]["content"]


# The web and a button decide the same approval at the same moment.

RACE_ROUNDS = 10


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_web_decision_and_a_button_at_once_have_exactly_one_winner(discord, app):
    operator = make_user("oscar-operator", Tier.OPERATOR)
    owner = make_user("wendy-owner", Tier.OWNER)
    owner2 = make_user("walt-owner", Tier.OWNER)
    linked(app, owner, ALICE)
    make_channel()
    for round_number in range(RACE_ROUNDS):
        approval = request_approval(action="test.risky-tool", requested_by=operator, reason="race")
        message = messages_to(discord, DM_CHANNEL)[-1]
        interaction = button_press(buttons_of(message)["Approve"], message["id"])

        def by_button(interaction: dict[str, Any] = interaction) -> str:
            return str(respond(app, interaction)["data"]["content"])

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
        button_won = f"Approval #{approval.pk} approved." in outcomes
        web_won = "web won" in outcomes
        assert button_won != web_won, f"round {round_number}: {outcomes}"
        expected = (owner, Approval.Status.APPROVED) if button_won else (owner2, "rejected")
        assert (approval.decided_by, approval.status) == expected
        decisions = AuditEvent.objects.filter(
            action__in=["approval.approved", "approval.rejected"], object_id=str(approval.pk)
        )
        assert decisions.count() == 1
        last_edit = edits_of(discord, message)[-1]
        assert f"by {expected[0].get_username()}" in last_edit["content"]
