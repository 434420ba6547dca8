"""Service accounts: the inactive accounts that stand for a part of the product (the
self-heal engine, a service calling the gateway, the chat command line) wherever a
person is expected, such as the requester of an approval.

An account is named `service-<name>`, cannot log in (inactive, no usable password),
and is in no tier, so it can ask for things but never decide or change them.
"""

from __future__ import annotations

from django.contrib.auth.models import User

from controlplane.tiers import StaffUser

PREFIX = "service-"


def service_account_name(service: str) -> str:
    return f"{PREFIX}{service}"[: User._meta.get_field("username").max_length]


def service_account(service: str) -> StaffUser:
    """The inactive account that stands for `service`, created on first use."""
    account, created = User.objects.get_or_create(
        username=service_account_name(service), defaults={"is_active": False}
    )
    if created:
        account.set_unusable_password()
        account.save(update_fields=["password"])
    return account
