"""Linking a staff member's chat account (Telegram, Discord) to their staff account,
and unlinking it: the only code that creates or deletes `ChatAccount` rows, and
where both are audited. Deleting an integration takes its links with it (the
database's cascade): each is audited as an unlink too (`via: integration deleted`,
by whoever deleted the integration).

A staff member asks their profile page for a code (`issue_link_code`) and sends it
to the bot (`/link CODE`). A code is good once and for `CHATOPS_LINK_CODE_MINUTES`;
only its HMAC is stored. It is claimed with one conditional UPDATE, so two accounts
sending the same code at the same moment cannot both link with it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.db.models.signals import pre_delete
from django.dispatch import receiver
from django.utils import timezone
from django.utils.crypto import salted_hmac

from controlplane import audit
from controlplane.models import ChatAccount, Integration, LinkCode
from controlplane.tiers import StaffUser, is_staff_member

# No 0/O or 1/I: a code is read off one screen and typed on another.
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8


class LinkRefused(Exception):
    """The code cannot link this account; the message says why, for the chat."""


@dataclass(frozen=True)
class ChatIdentity:
    """Who wrote to a bot: the platform's ids of the person and of the chat."""

    integration: Integration
    platform: str
    platform_user_id: str
    chat_id: str
    display_name: str = ""


def _normalized(code: str) -> str:
    return "".join(code.split()).replace("-", "").upper()


def code_hash(code: str) -> str:
    return salted_hmac(
        "controlplane.chat_accounts.link_code", _normalized(code), algorithm="sha256"
    ).hexdigest()


def issue_link_code(user: StaffUser) -> str:
    """A fresh code for `user` (shown once, as XXXX-XXXX); their unused codes go."""
    code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    expires_at = timezone.now() + timedelta(minutes=settings.CHATOPS_LINK_CODE_MINUTES)
    with transaction.atomic():
        LinkCode.objects.filter(user=user, used_at__isnull=True).delete()
        LinkCode.objects.create(user=user, code_hash=code_hash(code), expires_at=expires_at)
    return f"{code[:4]}-{code[4:]}"


def linked_account(identity: ChatIdentity) -> ChatAccount | None:
    return (
        ChatAccount.objects.select_related("user")
        .filter(integration=identity.integration, platform_user_id=identity.platform_user_id)
        .first()
    )


def link_account(identity: ChatIdentity, code: str) -> ChatAccount:
    """Link the chat account that sent `code` to the code's staff member."""
    digest = code_hash(code)
    now = timezone.now()
    try:
        with transaction.atomic():
            claimed = LinkCode.objects.filter(
                code_hash=digest, used_at__isnull=True, expires_at__gt=now
            ).update(used_at=now)
            if not claimed:
                raise LinkRefused(_why_refused(digest, now))
            user = LinkCode.objects.select_related("user").get(code_hash=digest).user
            if not is_staff_member(user):
                raise LinkRefused("That code belongs to an account that is not staff any more.")
            existing = linked_account(identity)
            if existing is not None and existing.user_id != user.pk:
                raise LinkRefused(
                    "This chat account is already linked to another staff account: "
                    "send /unlink first."
                )
            if existing is not None:
                existing.chat_id, existing.display_name = identity.chat_id, identity.display_name
                existing.save(update_fields=["chat_id", "display_name"])
                return existing
            account = ChatAccount.objects.create(
                platform=identity.platform,
                integration=identity.integration,
                platform_user_id=identity.platform_user_id,
                chat_id=identity.chat_id,
                display_name=identity.display_name[:200],
                user=user,
            )
            audit.record("chat_account.linked", account, after=_described(account), actor=user)
            return account
    except IntegrityError as exc:
        # The same chat account linking twice at the same moment: one of them won.
        raise LinkRefused("This chat account was just linked: send /help.") from exc


def _why_refused(digest: str, now: Any) -> str:
    stored = LinkCode.objects.filter(code_hash=digest).first()
    fresh = "Get a fresh code on your profile page and send /link CODE."
    if stored is None:
        return f"That code is not one I know. {fresh}"
    if stored.used_at is not None:
        return f"That code was already used. {fresh}"
    return f"That code expired. {fresh}"


def unlink_account(account: ChatAccount, *, by: StaffUser, via: str) -> None:
    """Unlink from the chat (`via="chat"`), the profile page (`via="profile"`) or the
    admin (`via="admin"`)."""
    with transaction.atomic():
        audit.record(
            "chat_account.unlinked",
            account,
            before=_described(account),
            after={"via": via},
            actor=by,
        )
        account.delete()


@receiver(pre_delete, sender=ChatAccount, dispatch_uid="chat_accounts.integration_deleted")
def _unlinked_with_its_integration(
    sender: type[ChatAccount], instance: ChatAccount, origin: Any = None, **kwargs: Any
) -> None:
    """A link deleted because its integration is: audited as an unlink, the actor
    being whoever deletes the integration (the audit context's)."""
    by_integration = isinstance(origin, Integration) or (
        isinstance(origin, QuerySet) and origin.model is Integration
    )
    if by_integration:
        audit.record(
            "chat_account.unlinked",
            instance,
            before=_described(instance),
            after={"via": "integration deleted"},
        )


def _described(account: ChatAccount) -> dict[str, Any]:
    return {
        "platform": account.platform,
        "integration": account.integration.name,
        "platform_user_id": account.platform_user_id,
        "display_name": account.display_name,
        "user": account.user.get_username(),
    }
