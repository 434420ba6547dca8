"""The Code health page: repositories with their latest scan and score trend, the
findings with filters and pages, what is new this week, the open pull requests; mark
intended / reopen for those who triage, and Scan now for Operators."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from controlplane.models import AuditEvent
from healthmon.code_health import FINDINGS_PER_PAGE
from healthmon.models import Finding, PullRequest, Repository, Scan
from tests.healthmon.code_repos import UNUSED_IMPORT, make_repository

pytestmark = pytest.mark.django_db

URL = reverse("healthmon:code_health")


@pytest.fixture(autouse=True)
def _code_settings(settings: Any, tmp_path: Path) -> None:
    settings.HEALTHMON_CODE_WORKDIR = tmp_path / "work"
    settings.HEALTHMON_CODE_TASK_MIN_SEVERITY = "critical"


def finished_scan(repository: Repository, score: int, **fields: Any) -> Scan:
    now = timezone.now()
    values = {
        "status": Scan.Status.SUCCEEDED,
        "commit": "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678",
        "branch": "main",
        "started_at": now,
        "finished_at": now,
        "summary": {"ruff": {"reported": 1, "new": 1, "open": 0, "fixed": 0, "intended": 0}},
        "score": score,
        **fields,
    }
    return Scan.objects.create(repository=repository, **values)


def finding(repository: Repository, scan: Scan | None = None, **fields: Any) -> Finding:
    now = timezone.now()
    values = {
        "check_name": "ruff",
        "rule": "F401",
        "severity": Finding.Severity.MEDIUM,
        "message": "`os` imported but unused",
        "file": "app/main.py",
        "line": 3,
        "first_seen_at": now,
        "last_seen_at": now,
        "first_seen_scan": scan,
        "last_seen_scan": scan,
        **fields,
    }
    values.setdefault("identity", f"id-{Finding.objects.count()}-{values['rule']}")
    return Finding.objects.create(repository=repository, **values)


@pytest.fixture
def github_repo() -> Repository:
    return Repository.objects.create(
        name="shop", kind=Repository.Kind.GITHUB, full_name="acme/shop", default_branch="main"
    )


@pytest.fixture
def local_repo(tmp_path: Path) -> Repository:
    return Repository.objects.create(name="tools", path=str(tmp_path / "tools"))


def test_a_visitor_is_asked_to_log_in_and_an_outsider_is_refused(
    client: Any, outsider: Any
) -> None:
    response = client.get(URL)
    assert response.status_code == 302
    assert "/login/" in response["Location"]
    client.force_login(outsider)
    assert client.get(URL).status_code == 403


def test_it_shows_each_repository_with_its_scan_commit_links_and_score_trend(
    client: Any, observer: Any, github_repo: Repository, local_repo: Repository
) -> None:
    for score in (12, 8):
        scan = finished_scan(github_repo, score)
    finished_scan(local_repo, 3, commit="0123456789abcdef0123456789abcdef01234567")
    finding(github_repo, scan, file="app/main.py", line=3)
    finding(local_repo, None, rule="F841", file="tools/run.py", line=9)
    client.force_login(observer)

    response = client.get(URL)
    assert f'href="{reverse("healthmon:code_reports")}"' in response.content.decode()

    assert response.status_code == 200
    html = response.content.decode()
    assert f'href="https://github.com/acme/shop/commit/{scan.commit}"' in html
    assert f'href="https://github.com/acme/shop/blob/{scan.commit}/app/main.py#L3"' in html
    assert "<code>tools/run.py:9</code>" in html  # local: path, no link
    assert (
        '<code class="commit" title="0123456789abcdef0123456789abcdef01234567">0123456789<' in html
    )
    assert f'id="repo-{github_repo.pk}-score">8<' in html
    assert html.count("<polyline points=") == 2
    assert 'ws-connect="/ws/health/code/"' in html
    assert "Scan now" not in html  # an Observer only sees
    assert "Mark intended" not in html


def test_a_failed_check_shows_with_its_reason(
    client: Any, observer: Any, local_repo: Repository
) -> None:
    finished_scan(
        local_repo,
        0,
        status=Scan.Status.FAILED,
        error="vulture: crashed on app.py",
        summary={"vulture": {"error": "crashed on <app.py>"}, "ruff": {"new": 0, "open": 2}},
    )
    client.force_login(observer)

    html = client.get(URL).content.decode()

    assert "failed: crashed on &lt;app.py&gt;" in html
    assert "<code>ruff</code> 2 open" in html


def test_findings_are_filtered_by_repository_check_severity_status_and_text(
    client: Any, observer: Any, github_repo: Repository, local_repo: Repository
) -> None:
    scan = finished_scan(github_repo, 1)
    wanted = finding(github_repo, scan, check_name="stale", rule="V001", message="unused helper")
    finding(github_repo, scan, check_name="stale", rule="V002", severity=Finding.Severity.INFO)
    finding(github_repo, scan, message="unused helper", status=Finding.Status.FIXED)
    finding(local_repo, None, check_name="stale", message="unused helper")
    client.force_login(observer)

    response = client.get(
        URL, {"repository": "shop", "check": "stale", "severity": "medium", "q": "HELPER"}
    )

    html = response.content.decode()
    shown = [int(chunk.split('"', 1)[0]) for chunk in html.split('id="finding-')[1:]]
    assert shown == [wanted.pk]
    fixed = client.get(URL, {"status": "fixed"}).content.decode()
    assert fixed.count('id="finding-') == 1
    everything = client.get(URL, {"status": ""}).content.decode()
    assert everything.count('id="finding-') == 4


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ({"severity": "urgent"}, "Unknown severity &#x27;urgent&#x27;"),
        ({"status": "gone"}, "Unknown status &#x27;gone&#x27;"),
        ({"q": "x" * 300}, "at most 200 characters"),
        ({"repository": "a\x00b"}, "has no NUL"),
    ],
)
def test_a_bad_filter_value_gives_the_page_naming_it(
    client: Any, observer: Any, github_repo: Repository, query: dict[str, str], named: str
) -> None:
    client.force_login(observer)
    response = client.get(URL, query)
    assert response.status_code == 400
    html = response.content.decode()
    assert named in html
    assert "ws-connect" not in html
    assert 'id="code-findings"' in html


def test_findings_come_in_pages(client: Any, observer: Any, github_repo: Repository) -> None:
    scan = finished_scan(github_repo, 1)
    for number in range(FINDINGS_PER_PAGE + 5):
        finding(github_repo, scan, rule=f"R{number:03}")
    client.force_login(observer)

    first = client.get(URL).content.decode()
    second = client.get(URL, {"page": "2"}).content.decode()
    beyond = client.get(URL, {"page": "99"}).content.decode()
    nonsense = client.get(URL, {"page": "abc"})

    assert first.count('id="finding-') == FINDINGS_PER_PAGE
    assert second.count('id="finding-') == 5
    assert "page 2 of 2" in second
    assert 'rel="prev"' in second
    assert beyond.count('id="finding-') == 5  # the last page
    assert nonsense.status_code == 200
    assert nonsense.content.decode().count('id="finding-') == FINDINGS_PER_PAGE


def test_the_page_costs_the_same_queries_however_many_findings(
    client: Any, observer: Any, github_repo: Repository, local_repo: Repository
) -> None:
    scan = finished_scan(github_repo, 1)
    finding(github_repo, scan)
    PullRequest.objects.create(repository=github_repo, base="main", branch="fix-1", title="Fix")
    client.force_login(observer)
    client.get(URL)  # the session and content types are cached after this

    with CaptureQueriesContext(connection) as few:
        client.get(URL)
    for number in range(30):
        finding(github_repo, finished_scan(github_repo, number), rule=f"R{number}")
        finding(local_repo, None, rule=f"L{number}")
        PullRequest.objects.create(
            repository=local_repo, base="main", branch=f"fix-{number}", title=f"Fix {number}"
        )
    with CaptureQueriesContext(connection) as many:
        client.get(URL)

    assert len(many) == len(few)


def test_new_this_week_lists_open_findings_first_seen_in_the_last_seven_days(
    client: Any, observer: Any, github_repo: Repository
) -> None:
    scan = finished_scan(github_repo, 1)
    fresh = finding(github_repo, scan, rule="NEW1")
    old = finding(github_repo, scan, rule="OLD1", first_seen_at=timezone.now() - timedelta(days=8))
    client.force_login(observer)

    html = client.get(URL).content.decode()

    assert f'id="new-{fresh.pk}"' in html
    assert f'id="new-{old.pk}"' not in html
    assert 'id="code-new-count">(1)<' in html


def test_open_pull_requests_show_title_status_link_and_approval(
    client: Any, observer: Any, github_repo: Repository
) -> None:
    PullRequest.objects.create(
        repository=github_repo,
        base="main",
        branch="fix-imports",
        title="Remove <unused> imports",
        status=PullRequest.Status.OPEN,
        number=7,
        url="https://github.com/acme/shop/pull/7",
    )
    PullRequest.objects.create(
        repository=github_repo, base="main", branch="b", title="Proposed fix"
    )
    PullRequest.objects.create(
        repository=github_repo,
        base="main",
        branch="c",
        title="Merged one",
        status=PullRequest.Status.MERGED,
    )
    client.force_login(observer)

    html = client.get(URL).content.decode()

    link = '<a href="https://github.com/acme/shop/pull/7" rel="noopener">'
    assert f"{link}Remove &lt;unused&gt; imports</a>" in html
    assert "Proposed fix" in html
    assert "Waiting for approval" in html
    assert "Merged one" not in html


def test_an_operator_marks_a_finding_intended_and_reopens_it(
    client: Any, operator: Any, github_repo: Repository
) -> None:
    found = finding(github_repo, finished_scan(github_repo, 4))
    client.force_login(operator)
    assert "Mark intended" in client.get(URL).content.decode()

    response = client.post(
        reverse("healthmon:code_finding_intended", args=[found.pk]), {"shown": "status=open"}
    )

    assert response.status_code == 302
    assert response["Location"] == f"{URL}?status=open"
    found.refresh_from_db()
    assert found.status == Finding.Status.INTENDED
    assert AuditEvent.objects.filter(action="finding.intended", actor=operator).exists()

    response = client.post(
        reverse("healthmon:code_finding_reopen", args=[found.pk]), HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 204
    assert response["HX-Redirect"] == URL
    found.refresh_from_db()
    assert found.status == Finding.Status.OPEN


def test_an_operator_ignores_a_finding_and_reopens_it(
    client: Any, operator: Any, github_repo: Repository
) -> None:
    found = finding(github_repo, finished_scan(github_repo, 4))
    client.force_login(operator)
    assert "Ignore" in client.get(URL).content.decode()

    client.post(reverse("healthmon:code_finding_ignored", args=[found.pk]))

    found.refresh_from_db()
    assert found.status == Finding.Status.IGNORED
    assert AuditEvent.objects.filter(action="finding.ignored", actor=operator).exists()
    shown = client.get(URL, {"status": "ignored"}).content.decode()
    assert "Reopen" in shown
    client.post(reverse("healthmon:code_finding_reopen", args=[found.pk]))
    found.refresh_from_db()
    assert found.status == Finding.Status.OPEN


def test_reopening_an_open_finding_is_refused_with_a_message(
    client: Any, operator: Any, github_repo: Repository
) -> None:
    found = finding(github_repo, None)
    client.force_login(operator)

    response = client.post(reverse("healthmon:code_finding_reopen", args=[found.pk]), follow=True)

    assert "only intended or ignored reopen" in response.content.decode()
    found.refresh_from_db()
    assert found.status == Finding.Status.OPEN


def test_an_observer_cannot_triage_or_scan(
    client: Any, observer: Any, github_repo: Repository
) -> None:
    found = finding(github_repo, None)
    client.force_login(observer)

    assert (
        client.post(reverse("healthmon:code_finding_intended", args=[found.pk])).status_code == 403
    )
    assert client.post(reverse("healthmon:code_scan_now", args=[github_repo.pk])).status_code == 403
    found.refresh_from_db()
    assert found.status == Finding.Status.OPEN
    assert not Scan.objects.exists()


def test_actions_need_a_csrf_token(operator: Any, github_repo: Repository) -> None:
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(operator)
    found = finding(github_repo, None)
    response = strict.post(reverse("healthmon:code_finding_intended", args=[found.pk]))
    assert response.status_code == 403
    found.refresh_from_db()
    assert found.status == Finding.Status.OPEN


def test_scan_now_runs_a_scan_in_the_background(
    client: Any,
    operator: Any,
    tmp_path: Path,
    django_capture_on_commit_callbacks: Any,
) -> None:
    source = make_repository(tmp_path / "app", {"app.py": UNUSED_IMPORT})
    repository = Repository.objects.create(name="app", path=str(source))
    client.force_login(operator)
    assert "Scan now" in client.get(URL).content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("healthmon:code_scan_now", args=[repository.pk]))

    assert response.status_code == 302
    scan = Scan.objects.get(repository=repository)
    assert scan.status == Scan.Status.SUCCEEDED, scan.error
    assert scan.score == 4  # one medium finding
    assert Finding.objects.filter(repository=repository, rule="F401").exists()
    html = client.get(URL).content.decode()
    assert f"Scan #{scan.pk} of app is queued." in html
    assert f'id="repo-{repository.pk}-score">4<' in html


def test_scan_now_refuses_while_a_scan_of_the_repository_runs(
    client: Any, operator: Any, github_repo: Repository, django_capture_on_commit_callbacks: Any
) -> None:
    running = Scan.objects.create(
        repository=github_repo, status=Scan.Status.RUNNING, started_at=timezone.now()
    )
    client.force_login(operator)

    with django_capture_on_commit_callbacks(execute=False) as enqueued:
        response = client.post(
            reverse("healthmon:code_scan_now", args=[github_repo.pk]), follow=True
        )

    html = response.content.decode()
    assert f"A scan of shop is already running (#{running.pk})." in html
    assert Scan.objects.filter(repository=github_repo).count() == 1
    assert not any("scan_code" in repr(callback) for callback in enqueued)


def test_a_second_scan_now_is_refused_while_the_first_is_queued(
    client: Any, operator: Any, github_repo: Repository, django_capture_on_commit_callbacks: Any
) -> None:
    client.force_login(operator)
    url = reverse("healthmon:code_scan_now", args=[github_repo.pk])

    with django_capture_on_commit_callbacks(execute=False):
        client.post(url)
        response = client.post(url, follow=True)

    (queued,) = Scan.objects.filter(repository=github_repo)
    assert queued.status == Scan.Status.QUEUED
    assert f"A scan of shop is already queued (#{queued.pk})." in response.content.decode()
