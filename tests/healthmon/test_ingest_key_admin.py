"""Ingest keys in the admin: an Owner issues one (shown once, stored as a digest)
and revokes it, both audited; Observers and Operators do neither."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.contrib.contenttypes.models import ContentType

from controlplane import api_tokens
from controlplane.models import AuditEvent
from healthmon.ingest_keys import authenticate, issue_key
from healthmon.models import IngestKey, LogSource

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/healthmon/ingestkey/"
RAW_KEY = re.compile(r"cplog_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


@pytest.fixture
def source() -> LogSource:
    return LogSource.objects.create(name="shop", service="shop", kind=LogSource.Kind.OTLP)


def trail(key: IngestKey) -> Any:
    return AuditEvent.objects.filter(
        content_type=ContentType.objects.get_for_model(key), object_id=str(key.pk)
    ).order_by("id")


def test_an_owner_issues_a_key_and_sees_it_once(client: Any, owner: Any, source: LogSource) -> None:
    client.force_login(owner)
    response = client.post(f"{CHANGELIST}add/", {"source": source.pk, "name": "shop pods"})

    assert response.status_code == 200
    match = RAW_KEY.search(response.content.decode())
    assert match is not None
    raw = match.group(0)
    key = IngestKey.objects.get()
    assert authenticate(raw) == key
    assert key.digest == api_tokens.digest(raw)
    assert "no-store" in response["Cache-Control"]
    assert all(raw not in cookie.value for cookie in client.cookies.values())
    for page in (CHANGELIST, f"{CHANGELIST}{key.pk}/change/"):
        assert raw not in client.get(page).content.decode()
    event = trail(key).get()
    assert (event.action, event.actor) == ("ingest_key.created", owner)
    assert raw not in json.dumps(event.after)
    assert key.digest not in json.dumps(event.after)


def test_an_owner_revokes_a_key_and_it_no_longer_authenticates(
    client: Any, owner: Any, source: LogSource
) -> None:
    key, raw = issue_key(source, "shop pods")
    client.force_login(owner)
    response = client.post(
        CHANGELIST, {"action": "revoke", "_selected_action": [key.pk], "index": "0"}
    )
    assert response.status_code == 302
    assert authenticate(raw) is None
    revoked = trail(key).get(action="ingest_key.revoked")
    assert revoked.actor == owner
    assert revoked.before == {"revoked_at": None}


@pytest.mark.parametrize("persona", ["observer", "operator"])
def test_observers_and_operators_can_neither_issue_nor_revoke(
    client: Any, request: Any, persona: str, source: LogSource
) -> None:
    key, raw = issue_key(source, "shop pods")
    client.force_login(request.getfixturevalue(persona))
    assert client.get(CHANGELIST).status_code == 200  # every tier sees the keys
    response = client.post(f"{CHANGELIST}add/", {"source": source.pk, "name": "sneaky"})
    assert response.status_code == 403
    client.post(CHANGELIST, {"action": "revoke", "_selected_action": [key.pk], "index": "0"})
    assert authenticate(raw) == key
    assert IngestKey.objects.count() == 1


def test_not_even_an_owner_edits_or_deletes_a_key(
    client: Any, owner: Any, source: LogSource
) -> None:
    key, _raw = issue_key(source, "shop pods")
    client.force_login(owner)
    page = f"{CHANGELIST}{key.pk}/change/"
    assert client.get(page).status_code == 200
    assert client.post(page, {"name": "renamed"}).status_code == 403
    assert client.post(f"{CHANGELIST}{key.pk}/delete/", {"post": "yes"}).status_code == 403
    key.refresh_from_db()
    assert key.name == "shop pods"
