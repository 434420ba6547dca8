from __future__ import annotations

import re
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from controlplane.models import (
    Approval,
    AuditEvent,
    FeatureToggle,
    NotificationChannel,
    ToggleLocked,
)
from controlplane.tiers import TIER_GROUPS, Tier, tier_of

pytestmark = pytest.mark.django_db


def run(*args: Any) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def owners() -> Any:
    return get_user_model().objects.filter(groups__name=TIER_GROUPS[Tier.OWNER])


def demo_counts() -> dict[str, int]:
    return {
        "toggles": FeatureToggle.objects.count(),
        "channels": NotificationChannel.objects.count(),
        "approvals": Approval.objects.count(),
        "users": get_user_model().objects.count(),
    }


# toggle


def test_toggle_list_prints_every_toggle_with_its_state_and_flags():
    FeatureToggle.objects.create(key="agents.autopilot", enabled=False, locked=True)
    out = run("toggle", "list")
    lines = out.splitlines()
    assert "off  agents.autopilot  locked" in lines
    assert "on   notifications.enabled  critical" in lines


def test_toggle_unlock_unlocks_and_audits_the_reason():
    toggle = FeatureToggle.objects.create(key="agents.autopilot", enabled=True, locked=True)
    out = run("toggle", "unlock", "agents.autopilot", "--reason", "Incident 42 resolved")
    assert "Unlocked 'agents.autopilot'." in out
    toggle.refresh_from_db()
    assert toggle.locked is False
    event = AuditEvent.objects.get(action="featuretoggle.unlocked")
    assert event.object_id == str(toggle.pk)
    assert event.actor is None
    assert event.actor_label == "system"
    assert event.before == {"locked": True}
    assert event.after == {"locked": False, "reason": "Incident 42 resolved"}


def test_a_toggle_unlocked_by_the_command_can_be_changed_again():
    toggle = FeatureToggle.objects.create(key="agents.autopilot", enabled=True, locked=True)
    toggle.enabled = False
    with pytest.raises(ToggleLocked):
        toggle.save()
    run("toggle", "unlock", "agents.autopilot", "--reason", "maintenance")
    toggle.refresh_from_db()
    toggle.enabled = False
    toggle.save()
    assert FeatureToggle.objects.get(pk=toggle.pk).enabled is False


def test_toggle_unlock_without_a_reason_errors_and_leaves_it_locked():
    toggle = FeatureToggle.objects.create(key="agents.autopilot", locked=True)
    with pytest.raises(CommandError, match="--reason"):
        run("toggle", "unlock", "agents.autopilot")
    toggle.refresh_from_db()
    assert toggle.locked is True
    assert not AuditEvent.objects.filter(action="featuretoggle.unlocked").exists()


def test_toggle_unlock_with_a_blank_reason_errors_and_leaves_it_locked():
    toggle = FeatureToggle.objects.create(key="agents.autopilot", locked=True)
    with pytest.raises(CommandError, match="needs a reason"):
        run("toggle", "unlock", "agents.autopilot", "--reason", "   ")
    toggle.refresh_from_db()
    assert toggle.locked is True
    assert not AuditEvent.objects.filter(action="featuretoggle.unlocked").exists()


def test_toggle_unlock_of_an_unknown_key_errors():
    with pytest.raises(CommandError, match=re.escape("No feature toggle 'no.such'")):
        run("toggle", "unlock", "no.such", "--reason", "typo")


def test_toggle_without_a_verb_errors():
    with pytest.raises(CommandError):
        run("toggle")


# bootstrap


def test_bootstrap_creates_one_owner_and_shows_its_password_once():
    first = run("bootstrap")
    assert "Created Owner account 'owner' with password: " in first
    password = first.split("with password: ", 1)[1].split()[0]
    owner = get_user_model().objects.get(username="owner")
    assert owner.check_password(password)
    assert tier_of(owner) == Tier.OWNER

    second = run("bootstrap")
    assert "password:" not in second
    assert password not in second
    assert "Owner account 'owner' exists" in second
    assert owners().count() == 1


def test_bootstrap_demo_twice_creates_one_owner_and_no_duplicate_demo_data():
    first = run("bootstrap", "--demo")
    assert "with password: " in first
    assert "Demo data is loaded." in first
    after_first = demo_counts()
    assert owners().count() == 1
    assert FeatureToggle.objects.filter(key="demo.experimental-dashboard").exists()
    assert NotificationChannel.objects.filter(name="ops-email").exists()
    assert Approval.objects.filter(status=Approval.Status.PENDING).count() == 1

    second = run("bootstrap", "--demo")
    assert "password:" not in second
    assert demo_counts() == after_first
    assert owners().count() == 1


def test_bootstrap_demo_attributes_its_changes_to_the_owner():
    run("bootstrap", "--demo")
    owner = owners().get()
    created = AuditEvent.objects.filter(
        action__in=["featuretoggle.created", "notificationchannel.created"]
    )
    assert created.count() == 2
    assert set(created.values_list("actor", flat=True)) == {owner.pk}


def test_bootstrap_demo_asks_for_an_approval_the_owner_can_decide():
    run("bootstrap", "--demo")
    approval = Approval.objects.get()
    assert approval.requested_by.username == "demo-operator"
    assert not approval.requested_by.has_usable_password()
    assert tier_of(approval.requested_by) == Tier.OPERATOR
    assert approval.required_tier == Tier.OWNER
    assert approval.proposal == {"key": "demo.experimental-dashboard", "enabled": True}


def test_bootstrap_keeps_an_existing_owner_and_creates_none(owner):
    out = run("bootstrap", "--demo")
    assert "password:" not in out
    assert f"Owner account '{owner.username}' exists" in out
    assert list(owners()) == [owner]
    assert not get_user_model().objects.filter(username="owner").exists()


def test_bootstrap_with_a_username_names_the_owner():
    out = run("bootstrap", "--username", "admin")
    assert "Created Owner account 'admin'" in out
    assert owners().get().username == "admin"
