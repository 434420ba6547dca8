"""Linking a Telegram account to a staff account: a one-time code from the profile
page, sent to the bot as `/link CODE` (by webhook or by polling); refused when wrong,
expired or used; unlinked from either side; audited; and accounts that are not
linked get one polite refusal and nothing else."""

from __future__ import annotations

import re
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from controlplane.chat_accounts import ChatIdentity, LinkRefused, issue_link_code, link_account
from controlplane.chat_commands import REFUSAL
from controlplane.models import AuditEvent, ChatAccount, Integration, LinkCode
from controlplane.tiers import Tier
from tests.controlplane.telegram_bots import (
    ALICE,
    MALLORY,
    bot,
    hook_bot,
    linked,
    make_bot,
    poll,
    say,
    telegram,
)
from tests.personas import make_user

__all__ = ["bot", "hook_bot", "telegram"]  # fixtures

pytestmark = pytest.mark.django_db
CODE = re.compile(r"/link ([A-Z2-9]{4}-[A-Z2-9]{4})")
HANG_GUARD_SECONDS = 60


def _code_from_profile(client: Client, user) -> str:
    client.force_login(user)
    response = client.post("/accounts/profile/link-code/")
    assert response.status_code == 200
    assert response["Cache-Control"].startswith("max-age=0")
    found = CODE.search(response.content.decode())
    assert found is not None
    return found.group(1)


# The profile page


def test_the_profile_page_is_for_staff_only(client, outsider):
    assert client.get("/accounts/profile/")["Location"].startswith("/accounts/login/")
    client.force_login(outsider)
    assert client.get("/accounts/profile/").status_code == 403
    assert client.post("/accounts/profile/link-code/").status_code == 403
    assert not LinkCode.objects.exists()


def test_the_nav_links_to_the_profile_page(client, observer):
    client.force_login(observer)

    page = client.get("/").content.decode()

    assert 'href="/accounts/profile/"' in page


def test_the_profile_page_shows_the_linked_accounts_with_an_unlink_button(
    client, owner, operator, hook_bot
):
    linked(hook_bot, owner)
    linked(hook_bot, operator, user_id=MALLORY)
    client.force_login(owner)

    page = client.get("/accounts/profile/").content.decode()

    assert "Telegram alice" in page
    mine = ChatAccount.objects.get(user=owner)
    theirs = ChatAccount.objects.get(user=operator)
    assert f'action="/accounts/profile/chat-accounts/{mine.pk}/unlink/"' in page
    assert f"/chat-accounts/{theirs.pk}/" not in page
    assert "Get a link code" in page
    assert CODE.search(page) is None  # a code is issued by a POST only


def test_a_code_is_stored_only_as_a_hash_and_a_new_one_replaces_the_unused_one(client, observer):
    first = _code_from_profile(client, observer)
    second = _code_from_profile(client, observer)

    stored = list(LinkCode.objects.values_list("code_hash", flat=True))
    assert len(stored) == 1
    assert first.replace("-", "") not in stored[0]
    assert second.replace("-", "") not in stored[0]
    assert first != second


# Linking


def test_a_code_sent_through_the_webhook_links_the_account_and_is_audited(
    client, telegram, hook_bot, operator
):
    code = _code_from_profile(client, operator)

    replies = say(client, telegram, hook_bot, f"/link {code}")

    assert replies[0].startswith("Linked: this chat account now acts for oscar-operator")
    account = ChatAccount.objects.get()
    assert (account.user, account.platform, account.platform_user_id, account.chat_id) == (
        operator,
        "telegram",
        str(ALICE),
        str(ALICE),
    )
    event = AuditEvent.objects.get(action="chat_account.linked")
    assert event.actor == operator
    assert event.after["platform_user_id"] == str(ALICE)
    assert event.after["integration"] == "hook-bot"
    # Linked, the account's commands run.
    assert say(client, telegram, hook_bot, "/help")[0].startswith("You act as oscar-operator.")


def test_a_code_sent_while_polling_links_the_account(client, telegram, bot, observer):
    code = _code_from_profile(client, observer)

    replies = poll(telegram, bot, f"/link {code.lower()}")

    assert replies[0].startswith("Linked: this chat account now acts for olive-observer")
    assert ChatAccount.objects.get().user == observer
    assert AuditEvent.objects.filter(action="chat_account.linked").count() == 1


def test_a_deep_link_start_carries_the_code(client, telegram, bot, observer):
    code = _code_from_profile(client, observer)

    replies = poll(telegram, bot, f"/start {code}")

    assert replies[0].startswith("Linked:")


def test_a_wrong_code_is_refused(client, telegram, hook_bot, operator):
    _code_from_profile(client, operator)

    replies = say(client, telegram, hook_bot, "/link ABCD-EFGH")

    assert replies == [
        "That code is not one I know. Get a fresh code on your profile page and send /link CODE."
    ]
    assert not ChatAccount.objects.exists()


def test_an_expired_code_is_refused(client, telegram, hook_bot, operator):
    code = _code_from_profile(client, operator)
    LinkCode.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    replies = say(client, telegram, hook_bot, f"/link {code}")

    assert replies[0].startswith("That code expired.")
    assert not ChatAccount.objects.exists()


def test_a_used_code_is_refused_to_another_account(client, telegram, hook_bot, operator):
    code = _code_from_profile(client, operator)
    say(client, telegram, hook_bot, f"/link {code}")

    replies = say(client, telegram, hook_bot, f"/link {code}", user_id=MALLORY)

    assert replies[0].startswith("That code was already used.")
    assert list(ChatAccount.objects.values_list("platform_user_id", flat=True)) == [str(ALICE)]


def test_a_code_of_someone_no_longer_staff_is_refused(client, telegram, hook_bot, operator):
    code = _code_from_profile(client, operator)
    operator.groups.clear()

    replies = say(client, telegram, hook_bot, f"/link {code}")

    assert replies == ["That code belongs to an account that is not staff any more."]
    assert not ChatAccount.objects.exists()


def test_an_account_linked_to_someone_else_must_unlink_first(
    client, telegram, hook_bot, owner, operator
):
    linked(hook_bot, owner)
    code = _code_from_profile(client, operator)

    replies = say(client, telegram, hook_bot, f"/link {code}")

    assert replies[0].startswith("This chat account is already linked to another staff account")
    assert ChatAccount.objects.get().user == owner
    # The code was not spent on the refusal.
    assert LinkCode.objects.get(user=operator).used_at is None


# Accounts that are not linked


@pytest.mark.parametrize("text", ["/help", "/unlink", "/status", "hello", "/start", "", "/"])
def test_an_account_not_linked_gets_the_polite_refusal_only(
    client, telegram, hook_bot, owner, text
):
    linked(hook_bot, owner)  # someone else's link changes nothing for Mallory

    replies = say(client, telegram, hook_bot, text, user_id=MALLORY)

    assert replies == [REFUSAL]
    assert ChatAccount.objects.count() == 1


def test_a_linked_account_whose_owner_left_the_tiers_is_refused(
    client, telegram, hook_bot, operator
):
    linked(hook_bot, operator)
    operator.groups.clear()

    assert say(client, telegram, hook_bot, "/help") == [REFUSAL]


# Unlinking


def test_unlink_from_the_chat(client, telegram, hook_bot, owner):
    linked(hook_bot, owner)

    replies = say(client, telegram, hook_bot, "/unlink")

    assert replies[0].startswith("Unlinked: this chat account no longer acts for wendy-owner.")
    assert not ChatAccount.objects.exists()
    event = AuditEvent.objects.get(action="chat_account.unlinked")
    assert (event.actor, event.after, event.before["user"]) == (
        owner,
        {"via": "chat"},
        "wendy-owner",
    )
    assert say(client, telegram, hook_bot, "/help") == [REFUSAL]


def test_unlink_from_the_profile_page(client, telegram, hook_bot, observer):
    account = linked(hook_bot, observer)
    client.force_login(observer)

    response = client.post(f"/accounts/profile/chat-accounts/{account.pk}/unlink/", follow=True)

    assert "is unlinked: it no longer acts for you." in response.content.decode()
    assert not ChatAccount.objects.exists()
    event = AuditEvent.objects.get(action="chat_account.unlinked")
    assert (event.actor, event.after) == (observer, {"via": "profile"})
    assert say(client, telegram, hook_bot, "/help") == [REFUSAL]


def test_nobody_unlinks_another_members_account(client, hook_bot, owner, operator):
    account = linked(hook_bot, operator)
    client.force_login(owner)

    response = client.post(f"/accounts/profile/chat-accounts/{account.pk}/unlink/")

    assert response.status_code == 404
    assert ChatAccount.objects.filter(pk=account.pk).exists()


def test_unlinking_needs_a_post_with_the_csrf_token(hook_bot, owner):
    account = linked(hook_bot, owner)
    checked = Client(enforce_csrf_checks=True)
    checked.force_login(owner)

    assert checked.get(f"/accounts/profile/chat-accounts/{account.pk}/unlink/").status_code == 405
    assert checked.post(f"/accounts/profile/chat-accounts/{account.pk}/unlink/").status_code == 403
    assert checked.post("/accounts/profile/link-code/").status_code == 403
    assert ChatAccount.objects.filter(pk=account.pk).exists()


# One code, one link, even at the same moment


def _link_in_thread(integration_id, user_id, code, barrier, outcomes):
    try:
        integration = Integration.objects.get(pk=integration_id)
        identity = ChatIdentity(integration, "telegram", str(user_id), str(user_id))
        barrier.wait(timeout=HANG_GUARD_SECONDS)
        try:
            link_account(identity, code)
        except LinkRefused:
            outcomes.append("refused")
        else:
            outcomes.append("linked")
    except Exception as exc:  # surfaced in the main thread's assertions
        outcomes.append(f"crashed: {exc!r}")
    finally:
        connection.close()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_accounts_sending_one_code_at_once_link_one(telegram):
    integration = make_bot(telegram)
    operator = make_user("race-operator", Tier.OPERATOR)
    for round_number in range(10):
        code = issue_link_code(operator)
        barrier = threading.Barrier(2)
        outcomes: list[str] = []
        threads = [
            threading.Thread(
                target=_link_in_thread,
                args=(integration.pk, 9000 + 2 * round_number + n, code, barrier, outcomes),
            )
            for n in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=HANG_GUARD_SECONDS)
        assert sorted(outcomes) == ["linked", "refused"], f"round {round_number}: {outcomes}"
    assert ChatAccount.objects.filter(user=operator).count() == 10
    assert AuditEvent.objects.filter(action="chat_account.linked").count() == 10


def test_an_owner_removes_a_link_in_the_admin_audited_as_an_unlink(
    client, hook_bot, owner, operator
):
    account = linked(hook_bot, operator)
    client.force_login(owner)

    page = client.get("/admin/controlplane/chataccount/").content.decode()
    response = client.post(
        f"/admin/controlplane/chataccount/{account.pk}/delete/", {"post": "yes"}, follow=True
    )

    assert "Telegram alice" in page
    assert response.status_code == 200
    assert not ChatAccount.objects.exists()
    event = AuditEvent.objects.get(action="chat_account.unlinked")
    assert (event.actor, event.after, event.before["user"]) == (
        owner,
        {"via": "admin"},
        "oscar-operator",
    )


def test_an_observer_sees_the_links_but_cannot_remove_one(client, hook_bot, observer, operator):
    account = linked(hook_bot, operator)
    client.force_login(observer)

    assert client.get("/admin/controlplane/chataccount/").status_code == 200
    response = client.post(f"/admin/controlplane/chataccount/{account.pk}/delete/", {"post": "yes"})

    assert response.status_code == 403
    assert ChatAccount.objects.filter(pk=account.pk).exists()


def test_a_name_with_a_nul_character_still_links(client, telegram, hook_bot, observer):
    code = _code_from_profile(client, observer)

    replies = say(client, telegram, hook_bot, f"/link {code}", username="al\x00ice")

    assert replies[0].startswith("Linked:")
    assert ChatAccount.objects.get().display_name == "alice Alice"
