from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from controlplane.audit import acting_as
from controlplane.models import AuditEvent


@pytest.mark.django_db
def test_giving_someone_a_tier_is_audited_with_before_and_after(owner, outsider):
    with acting_as(owner, "10.1.2.3"):
        outsider.groups.add(Group.objects.get(name="Operator"))

    event = AuditEvent.objects.get(action="user.tiers_changed", object_id=str(outsider.pk))
    assert event.before == {"groups": []}
    assert event.after == {"groups": ["Operator"]}
    assert event.actor == owner
    assert event.client_address == "10.1.2.3"
    assert event.object_repr == outsider.username


@pytest.mark.django_db
def test_making_someone_a_superuser_is_audited(owner, observer):
    with acting_as(owner):
        observer.is_superuser = True
        observer.save()

    event = AuditEvent.objects.get(action="user.access_changed")
    assert event.before == {"is_superuser": False}
    assert event.after == {"is_superuser": True}


@pytest.mark.django_db
def test_a_login_timestamp_is_not_an_access_change(client, observer):
    client.force_login(observer)

    assert not AuditEvent.objects.filter(action="user.access_changed").exists()
