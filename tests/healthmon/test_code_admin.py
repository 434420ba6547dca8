"""Code health in the admin: repositories under Control, scans and findings under
Observability; Operators mark findings intended or reopen them, audited."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from controlplane.models import AuditEvent, Integration
from healthmon.models import CodeReport, Finding, Repository, Scan
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
    assert {"Scan", "Finding", "CodeReport"} <= set(found["Observability"])
    assert client.get(FINDINGS).status_code == 200
    assert client.get("/admin/healthmon/scan/").status_code == 200


def test_a_code_report_is_read_only_in_the_admin_and_links_its_page(
    client: Any, owner: Any
) -> None:
    from healthmon.code_reports import make_report, seven_days_before

    report = make_report(CodeReport.Trigger.ON_DEMAND, seven_days_before(timezone.now()))
    client.force_login(owner)

    page = client.get(f"/admin/healthmon/codereport/{report.pk}/change/").content.decode()

    assert f'href="/health/code/reports/{report.pk}/"' in page
    assert client.get("/admin/healthmon/codereport/add/").status_code == 403


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


REPOSITORY_ADD = "/admin/healthmon/repository/add/"


def _github_form(**fields: Any) -> dict[str, Any]:
    return {
        "name": "backend",
        "kind": "github",
        "path": "",
        "integration": "",
        "full_name": "octo-org/backend",
        "settings": "{}",
        "enabled": "on",
        **fields,
    }


def _integration(kind: str, name: str) -> Integration:
    integration = Integration(kind=kind, name=name)
    integration.set_secrets({"token": "github_pat_admin"} if kind == "github" else {})
    integration.save()
    return integration


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({}, "integration", "read through a GitHub integration"),
        ({"integration": "railway"}, "integration", "a Railway integration: choose a GitHub one"),
        ({"integration": "github", "full_name": ""}, "full_name", "needs its owner/name"),
        ({"integration": "github", "full_name": "backend"}, "full_name", "as owner/name"),
        ({"integration": "github", "full_name": "a/b/c"}, "full_name", "as owner/name"),
    ],
)
def test_a_github_repository_needs_a_github_integration_and_owner_name(
    client: Any, owner: Any, fields: dict[str, str], field: str, reason: str
) -> None:
    named = {"github": _integration("github", "github"), "railway": _integration("railway", "rw")}
    if "integration" in fields:
        fields = {**fields, "integration": str(named[fields["integration"]].pk)}
    client.force_login(owner)

    response = client.post(REPOSITORY_ADD, _github_form(**fields))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert reason in " ".join(errors[field])
    assert not Repository.objects.exists()


def test_a_github_repository_with_its_integration_is_saved(client: Any, owner: Any) -> None:
    integration = _integration("github", "github")
    client.force_login(owner)

    response = client.post(REPOSITORY_ADD, _github_form(integration=str(integration.pk)))

    assert response.status_code == 302
    saved = Repository.objects.get()
    assert (saved.kind, saved.integration, saved.full_name) == (
        "github",
        integration,
        "octo-org/backend",
    )
