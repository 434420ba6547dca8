"""Code health in the admin: repositories under Control, scans and findings under
Observability; Operators mark findings intended or reopen them, audited."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from controlplane.models import AuditEvent
from healthmon.models import Finding, Repository, Scan
from tests.healthmon.test_admin import sections

pytestmark = pytest.mark.django_db

FINDINGS = "/admin/healthmon/finding/"


def a_finding() -> Finding:
    repository = Repository.objects.create(name="app", path="/srv/app")
    scan = Scan.objects.create(repository=repository, status=Scan.Status.SUCCEEDED)
    now = timezone.now()
    return Finding.objects.create(
        repository=repository,
        check_name="ruff",
        rule="F401",
        identity="a" * 64,
        severity=Finding.Severity.MEDIUM,
        message="`os` imported but unused",
        file="app.py",
        line=1,
        first_seen_scan=scan,
        last_seen_scan=scan,
        first_seen_at=now,
        last_seen_at=now,
    )


def test_repositories_are_control_and_scans_and_findings_observability(
    client: Any, owner: Any
) -> None:
    client.force_login(owner)
    found = sections(client)
    assert "Repository" in found["Control"]
    assert {"Scan", "Finding"} <= set(found["Observability"])
    assert client.get(FINDINGS).status_code == 200
    assert client.get("/admin/healthmon/scan/").status_code == 200


def test_an_operator_marks_a_finding_intended_and_reopens_it(client: Any, operator: Any) -> None:
    finding = a_finding()
    client.force_login(operator)

    client.post(FINDINGS, {"action": "mark_intended", "_selected_action": [finding.pk]})
    finding.refresh_from_db()
    assert finding.status == Finding.Status.INTENDED
    assert AuditEvent.objects.get(action="finding.intended").actor == operator

    client.post(FINDINGS, {"action": "reopen", "_selected_action": [finding.pk]})
    finding.refresh_from_db()
    assert finding.status == Finding.Status.OPEN


def test_an_operator_ignores_a_finding(client: Any, operator: Any) -> None:
    finding = a_finding()
    client.force_login(operator)

    client.post(FINDINGS, {"action": "mark_ignored", "_selected_action": [finding.pk]})

    finding.refresh_from_db()
    assert finding.status == Finding.Status.IGNORED
    assert AuditEvent.objects.get(action="finding.ignored").actor == operator


def test_an_observer_cannot_mark_a_finding_intended(client: Any, observer: Any) -> None:
    finding = a_finding()
    client.force_login(observer)
    client.post(FINDINGS, {"action": "mark_intended", "_selected_action": [finding.pk]})
    finding.refresh_from_db()
    assert finding.status == Finding.Status.OPEN


def test_a_local_repository_without_a_path_is_refused_with_the_reason(
    client: Any, owner: Any
) -> None:
    client.force_login(owner)
    response = client.post(
        "/admin/healthmon/repository/add/",
        {"name": "app", "kind": "local", "path": "", "settings": "{}", "enabled": "on"},
    )
    assert response.status_code == 200
    assert "needs the path" in response.content.decode()
    assert not Repository.objects.exists()
