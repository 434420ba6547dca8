"""The log monitor in the admin: sources under Control, fingerprints under
Observability, moved only by their state actions."""

from __future__ import annotations

import pytest

from controlplane.models import AuditEvent
from healthmon.models import Fingerprint, LogSource
from tests.healthmon.health_data import ingest_lines, make_source

pytestmark = pytest.mark.django_db

FINGERPRINTS = "/admin/healthmon/fingerprint/"
SOURCES = "/admin/healthmon/logsource/"


def sections(client) -> dict[str, list[str]]:
    return {
        section["name"]: [model["object_name"] for model in section["models"]]
        for section in client.get("/admin/").context["app_list"]
    }


def test_sources_are_control_and_fingerprints_observability(client, owner):
    client.force_login(owner)
    found = sections(client)
    assert "LogSource" in found["Control"]
    assert "Fingerprint" in found["Observability"]


def test_the_fingerprint_list_shows_service_status_and_task(
    client, observer, django_assert_max_num_queries
):
    source = make_source()
    for message in ("Disk full on volume data", "Lock wait timeout exceeded on orders"):
        ingest_lines(source, message, 2)
    client.force_login(observer)
    with django_assert_max_num_queries(12):
        page = client.get(FINGERPRINTS)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Disk full on volume data" in html
    assert "unresolved" in html
    # Observers see; the state actions are not offered to them.
    assert 'value="resolve"' not in html
    assert client.get(f"{FINGERPRINTS}?q=Disk").status_code == 200


def test_an_operator_resolves_from_the_admin_audited(client, operator):
    fingerprint = ingest_lines(make_source(), "Disk full on volume data", 2)
    client.force_login(operator)
    response = client.post(
        FINGERPRINTS, {"action": "resolve", "_selected_action": [fingerprint.pk]}, follow=True
    )
    assert response.status_code == 200
    assert Fingerprint.objects.get(pk=fingerprint.pk).status == Fingerprint.Status.RESOLVED
    assert AuditEvent.objects.get(action="fingerprint.resolved").actor == operator

    client.post(FINGERPRINTS, {"action": "ignore_for_a_day", "_selected_action": [fingerprint.pk]})
    fingerprint.refresh_from_db()
    assert fingerprint.status == Fingerprint.Status.IGNORED
    assert fingerprint.ignored_until is not None


def test_an_observer_cannot_resolve_through_the_admin(client, observer):
    fingerprint = ingest_lines(make_source(), "Disk full on volume data", 2)
    client.force_login(observer)
    client.post(FINGERPRINTS, {"action": "resolve", "_selected_action": [fingerprint.pk]})
    assert Fingerprint.objects.get(pk=fingerprint.pk).status == Fingerprint.Status.UNRESOLVED


def test_an_owner_adds_a_source_with_json_settings_and_it_is_audited(client, owner):
    client.force_login(owner)
    response = client.post(
        f"{SOURCES}add/",
        {
            "name": "api-file",
            "service": "api",
            "kind": "file",
            "settings": '{"path": "/var/log/api.log"}',
            "enabled": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    source = LogSource.objects.get(name="api-file")
    assert source.settings == {"path": "/var/log/api.log"}
    assert AuditEvent.objects.filter(object_id=str(source.pk)).exists()


def test_source_settings_that_are_not_an_object_are_refused(client, owner):
    client.force_login(owner)
    response = client.post(
        f"{SOURCES}add/", {"name": "bad", "service": "api", "kind": "file", "settings": "[1, 2]"}
    )
    assert response.status_code == 200
    assert "Settings are a JSON object" in response.content.decode()
    assert not LogSource.objects.exists()


def test_an_observer_reads_a_sources_settings(client, observer):
    source = make_source(settings={"project_id": "p-1"})
    client.force_login(observer)
    html = client.get(f"{SOURCES}{source.pk}/change/").content.decode()
    assert "project_id" in html
