"""Deleting a Telegram or Discord integration removes the links of its accounts, and
each is in the audit trail as an unlink (who deleted the integration, which account
of whom), exactly once."""

from __future__ import annotations

import pytest
from django.test import Client

from controlplane.chat_accounts import ChatIdentity, issue_link_code, link_account
from controlplane.models import AuditEvent, ChatAccount, Integration

pytestmark = pytest.mark.django_db


def bot(kind: str, name: str) -> Integration:
    integration = Integration(kind=kind, name=name)
    integration.set_secrets({"bot_token": "123:secret"})
    integration.save()
    return integration


def link(integration: Integration, user, platform_user_id: str) -> ChatAccount:
    identity = ChatIdentity(
        integration, integration.kind, platform_user_id, platform_user_id, "Someone"
    )
    return link_account(identity, issue_link_code(user))


def unlinks() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="chat_account.unlinked").order_by("id"))


@pytest.mark.parametrize("kind", [Integration.Kind.TELEGRAM, Integration.Kind.DISCORD])
def test_deleting_an_integration_in_the_admin_unlinks_and_audits_each_account(
    kind, owner, operator
):
    doomed = bot(kind, "doomed-bot")
    kept = bot(kind, "kept-bot")
    link(doomed, owner, "1001")
    link(doomed, operator, "1002")
    survivor = link(kept, operator, "1002")
    admin = Client()
    admin.force_login(owner)

    response = admin.post(f"/admin/controlplane/integration/{doomed.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not Integration.objects.filter(pk=doomed.pk).exists()
    assert list(ChatAccount.objects.all()) == [survivor]
    events = unlinks()
    assert len(events) == 2
    assert {e.before["user"] for e in events} == {owner.username, operator.username}
    for event in events:
        assert event.actor == owner
        assert event.after == {"via": "integration deleted"}
        assert event.before["platform"] == kind
        assert event.before["integration"] == "doomed-bot"


def test_deleting_from_the_shell_is_audited_too_and_an_unlink_is_audited_once(owner, operator):
    telegram = bot(Integration.Kind.TELEGRAM, "tg-bot")
    link(telegram, owner, "2001")

    Integration.objects.filter(pk=telegram.pk).delete()

    [event] = unlinks()
    assert event.actor is None
    assert event.actor_label == "system"
    assert event.before["platform_user_id"] == "2001"
    assert not ChatAccount.objects.exists()


def test_unlinking_one_account_is_not_audited_as_an_integration_deletion(owner):
    from controlplane.chat_accounts import unlink_account

    account = link(bot(Integration.Kind.DISCORD, "dc-bot"), owner, "3001")

    unlink_account(account, by=owner, via="profile")

    [event] = unlinks()
    assert event.after == {"via": "profile"}
