"""Service accounts: inactive, no usable password, one per service name."""

from __future__ import annotations

import pytest

from controlplane.service_accounts import service_account
from controlplane.tiers import Tier, tier_of

pytestmark = pytest.mark.django_db


def test_it_creates_an_inactive_account_that_cannot_log_in() -> None:
    account = service_account("selfheal")

    assert account.username == "service-selfheal"
    assert not account.is_active
    assert not account.has_usable_password()
    assert tier_of(account) == Tier.NONE


def test_it_returns_the_same_account_every_time() -> None:
    assert service_account("gateway").pk == service_account("gateway").pk
