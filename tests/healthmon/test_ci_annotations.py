"""The CI check against a fake GitHub: the annotations of the scanned commit's check
runs become findings (severity by level, file and line), fixed when a later commit's
runs no longer report them, kept while CI is still running, read page by page, asked
once per commit, and a refusal of the checks API fails the check with its reason."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from controlplane.github import forget_installation_tokens
from healthmon.code_checkout import cache_path
from healthmon.code_scans import scan_repository
from healthmon.models import Finding, Repository, Scan
from tests.github_server import Answer, GitHubServer, Received
from tests.healthmon.code_repos import CLEAN, commit, git, make_repository
from tests.healthmon.github_repos import (
    APP_ID,
    FULL_NAME,
    INSTALLATION_ID,
    TOKEN,
    app_integration,
    github_repository,
    push,
    serve,
    token_integration,
)

pytestmark = pytest.mark.django_db

APP_TS = "export function total(items) {\n  let sum = 0\n  return items.length\n}\n"
CHECK_RUNS = f"/repos/{FULL_NAME}/commits/[^/]+/check-runs"


def annotation(level: str, line: int, title: str, message: str, path: str = "app.ts") -> Any:
    return {
        "path": path,
        "start_line": line,
        "end_line": line,
        "annotation_level": level,
        "title": title,
        "message": message,
    }


TSC = annotation("failure", 3, "TS2322", "Type 'number' is not assignable to type 'string'.")
ESLINT = annotation("warning", 2, "", "'sum' is assigned a value but never used.")


@pytest.fixture(autouse=True)
def _code_settings(settings: Any, tmp_path: Path) -> Iterator[None]:
    settings.HEALTHMON_CODE_WORKDIR = tmp_path / "work"
    settings.HEALTHMON_CODE_TASK_MIN_SEVERITY = "critical"
    forget_installation_tokens()
    yield
    forget_installation_tokens()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return make_repository(tmp_path / "backend", {"app.py": CLEAN, "app.ts": APP_TS})


@pytest.fixture
def github(source: Path) -> Iterator[GitHubServer]:
    with GitHubServer() as server:
        server.add_token(TOKEN)
        serve(server, source)
        yield server


@pytest.fixture
def repository(github: GitHubServer) -> Repository:
    return github_repository(token_integration(github))


def ci_findings(repository: Repository, **filters: Any) -> dict[str, Finding]:
    found = Finding.objects.filter(repository=repository, check_name="ci", **filters)
    return {finding.rule: finding for finding in found}


def checks_requests(github: GitHubServer) -> list[Received]:
    return [r for r in github.requests if "check-runs" in r.path]


def test_annotations_become_findings_with_their_severity_file_and_line(
    github: GitHubServer, repository: Repository, source: Path
) -> None:
    sha = git(source, "rev-parse", "HEAD")
    github.add_check_run(FULL_NAME, sha, "tsc", annotations=[TSC])
    github.add_check_run(FULL_NAME, sha, "eslint", conclusion="success", annotations=[ESLINT])
    notice = annotation("notice", 1, "mypy", "Skipping analyzing 'yaml'", path="app.py")
    github.add_check_run(FULL_NAME, sha, "lint", annotations=[notice])
    clean = github.add_check_run(FULL_NAME, sha, "tests", conclusion="success")
    github.add_check_run(FULL_NAME, "0" * 40, "tsc", annotations=[ESLINT])  # another commit

    scan = scan_repository(repository)

    assert scan.status == Scan.Status.SUCCEEDED, scan.error
    found = ci_findings(repository)
    assert set(found) == {"tsc/TS2322", "eslint/warning", "lint/mypy"}
    tsc, eslint, mypy = found["tsc/TS2322"], found["eslint/warning"], found["lint/mypy"]
    assert (tsc.severity, tsc.file, tsc.line) == (Finding.Severity.HIGH, "app.ts", 3)
    assert tsc.message == TSC["message"]
    assert (eslint.severity, eslint.file, eslint.line) == (Finding.Severity.MEDIUM, "app.ts", 2)
    assert (mypy.severity, mypy.file, mypy.line) == (Finding.Severity.LOW, "app.py", 1)
    assert scan.summary["ci"]["new"] == 3
    assert scan.state["checks"]["ci"]["complete"] is True
    # A run GitHub says has no annotations is not asked for them.
    asked = {r.path for r in checks_requests(github)}
    assert f"/repos/{FULL_NAME}/check-runs/{clean}/annotations" not in asked
    assert len(asked) == 4  # the commit's runs, and the annotations of three


def test_an_annotation_gone_in_a_later_commit_is_fixed_and_one_whose_lines_moved_stays(
    github: GitHubServer, repository: Repository, source: Path
) -> None:
    first = git(source, "rev-parse", "HEAD")
    github.add_check_run(FULL_NAME, first, "tsc", annotations=[TSC, ESLINT])
    scan_repository(repository)
    before = ci_findings(repository)["tsc/TS2322"]

    second = commit(source, {"app.ts": "// totals\n\n" + APP_TS.replace("  let sum = 0\n", "")})
    push(github, source)
    github.add_check_run(
        FULL_NAME, second, "tsc", annotations=[{**TSC, "start_line": 4, "end_line": 4}]
    )
    scan = scan_repository(repository)

    assert scan.commit == second
    assert scan.summary["ci"] == {
        "reported": 1,
        "new": 0,
        "open": 1,
        "fixed": 1,
        "intended": 0,
        "ignored": 0,
    }
    after = ci_findings(repository)
    assert (after["tsc/TS2322"].pk, after["tsc/TS2322"].line) == (before.pk, 4)
    assert after["tsc/warning"].status == Finding.Status.FIXED
    assert after["tsc/warning"].fixed_at is not None


def test_check_runs_and_annotations_are_read_page_by_page(
    github: GitHubServer, repository: Repository, source: Path
) -> None:
    many = "\n".join(f"value_{n} = {n}" for n in range(250)) + "\n"
    sha = commit(source, {"values.py": many}, "many values")
    push(github, source)
    annotations = [
        annotation("warning", n + 1, "reportUnused", f"value_{n} is unused", path="values.py")
        for n in range(250)
    ]
    for n in range(120):
        github.add_check_run(FULL_NAME, sha, f"job {n:03}", conclusion="success")
    github.add_check_run(FULL_NAME, sha, "pyright", annotations=annotations)

    scan = scan_repository(repository)

    assert scan.status == Scan.Status.SUCCEEDED, scan.error
    found = Finding.objects.filter(repository=repository, check_name="ci")
    assert found.count() == 250
    assert {f.line for f in found} == set(range(1, 251))
    pages = [(r.path.rsplit("/", 1)[-1], r.params) for r in checks_requests(github)]
    assert pages == [
        ("check-runs", {"per_page": "100", "page": "1"}),
        ("check-runs", {"per_page": "100", "page": "2"}),
        ("annotations", {"per_page": "100", "page": "1"}),
        ("annotations", {"per_page": "100", "page": "2"}),
        ("annotations", {"per_page": "100", "page": "3"}),
    ]


def test_a_run_s_annotations_past_the_limit_are_left_and_the_state_says_so(
    github: GitHubServer, repository: Repository, source: Path, settings: Any
) -> None:
    settings.HEALTHMON_CODE_CI_MAX_ANNOTATIONS = 150
    many = "\n".join(f"value_{n} = {n}" for n in range(250)) + "\n"
    sha = commit(source, {"values.py": many}, "many values")
    push(github, source)
    annotations = [
        annotation("notice", n + 1, "", f"value_{n}", path="values.py") for n in range(250)
    ]
    github.add_check_run(FULL_NAME, sha, "pyright", annotations=annotations)

    scan = scan_repository(repository)

    assert Finding.objects.filter(repository=repository, check_name="ci").count() == 150
    assert scan.state["checks"]["ci"]["truncated"] == ["pyright"]
    assert len([r for r in checks_requests(github) if r.path.endswith("/annotations")]) == 2


def test_a_commit_whose_ci_has_not_finished_keeps_the_previous_findings(
    github: GitHubServer, repository: Repository, source: Path
) -> None:
    first = git(source, "rev-parse", "HEAD")
    github.add_check_run(FULL_NAME, first, "tsc", annotations=[TSC])
    github.add_check_run(FULL_NAME, first, "eslint", annotations=[ESLINT])
    scan_repository(repository)
    second = commit(source, {"README.md": "docs\n"}, "docs")
    push(github, source)

    # No check run yet: everything is kept, and the state says why.
    waiting = scan_repository(repository)
    assert waiting.status == Scan.Status.SUCCEEDED, waiting.error
    assert waiting.summary["ci"]["fixed"] == 0
    assert {f.status for f in ci_findings(repository).values()} == {Finding.Status.OPEN}
    state = waiting.state["checks"]["ci"]
    assert (state["complete"], state["waiting_for"]) == (False, ["eslint", "tsc"])
    assert "no check run for this commit yet" in state["note"]

    # tsc still running, eslint finished clean: tsc's finding is kept, eslint's fixed.
    tsc_run = github.add_check_run(FULL_NAME, second, "tsc", status="in_progress")
    github.add_check_run(FULL_NAME, second, "eslint", conclusion="success")
    running = scan_repository(repository)
    assert running.summary["ci"]["fixed"] == 1
    found = ci_findings(repository)
    assert (found["tsc/TS2322"].status, found["eslint/warning"].status) == ("open", "fixed")
    assert running.state["checks"]["ci"]["waiting_for"] == ["tsc"]

    # tsc finished without the annotation: now it is fixed too.
    finished = github.check_runs[tsc_run]
    finished.status, finished.conclusion = "completed", "success"
    done = scan_repository(repository)
    assert ci_findings(repository)["tsc/TS2322"].status == Finding.Status.FIXED
    assert done.state["checks"]["ci"]["complete"] is True


def test_a_commit_whose_runs_all_finished_is_not_asked_again(
    github: GitHubServer, repository: Repository, source: Path
) -> None:
    github.add_check_run(FULL_NAME, git(source, "rev-parse", "HEAD"), "tsc", annotations=[TSC])
    scan_repository(repository)
    asked = len(checks_requests(github))

    again = scan_repository(repository)

    assert again.status == Scan.Status.SUCCEEDED, again.error
    assert len(checks_requests(github)) == asked
    assert again.summary["ci"]["open"] == 1


def test_an_app_without_the_checks_permission_fails_the_check_with_github_s_reason(
    github: GitHubServer, source: Path
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    github.add_app(APP_ID, key.public_key(), INSTALLATION_ID, {"contents": "read"})
    repository = github_repository(app_integration(github, key))
    github.add_check_run(FULL_NAME, git(source, "rev-parse", "HEAD"), "tsc", annotations=[TSC])

    scan = scan_repository(repository)

    assert scan.status == Scan.Status.FAILED
    assert scan.error.startswith("ci: GitHub answered 403 for /repos/octo-org/backend/commits/")
    assert "Resource not accessible by integration" in scan.error
    assert "needs read access to checks (Checks: read) on octo-org/backend" in scan.error
    assert scan.summary["ruff"]["reported"] == 0  # the other checks still count
    assert not ci_findings(repository)


def test_a_rate_limited_checks_api_fails_the_check_naming_the_reset_time(
    github: GitHubServer, repository: Repository
) -> None:
    resets_at = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=7)

    def limited(received: Received, groups: dict[str, str]) -> Answer:
        return github.rate_limited(resets_at)

    github.route("GET", CHECK_RUNS, limited)

    scan = scan_repository(repository)

    assert scan.status == Scan.Status.FAILED
    assert scan.error.startswith("ci: GitHub's API rate limit is used up (403)")
    assert f"resets at {resets_at:%Y-%m-%d %H:%M:%S} UTC" in scan.error


def test_a_local_repository_has_no_ci_check_runs(db: Any, source: Path) -> None:
    repository = Repository.objects.create(name="local", path=str(source))

    scan = scan_repository(repository)

    assert scan.status == Scan.Status.SUCCEEDED, scan.error
    assert scan.summary["ci"]["reported"] == 0


def test_odd_annotations_are_kept_as_far_as_they_go_and_never_fail_the_scan(
    github: GitHubServer, repository: Repository, source: Path
) -> None:
    odd = [
        {"annotation_level": "failure", "message": "Process completed with exit code 1."},
        annotation("mystery", 2**40, "", "a line past any file"),
        {**annotation("warning", 1, "x" * 300, "a long title"), "path": "d/" * 400 + "f.py"},
        {**annotation("notice", 1, "", "a line given as text"), "start_line": "7"},
    ]
    github.add_check_run(FULL_NAME, git(source, "rev-parse", "HEAD"), "build", annotations=odd)

    scan = scan_repository(repository)

    assert scan.status == Scan.Status.SUCCEEDED, scan.error
    found = {f.message: f for f in Finding.objects.filter(repository=repository, check_name="ci")}
    assert len(found) == 4
    workflow = found["Process completed with exit code 1."]
    assert (workflow.rule, workflow.file, workflow.line) == ("build/failure", "", None)
    assert workflow.severity == Finding.Severity.HIGH
    past = found["a line past any file"]
    assert (past.line, past.severity) == (None, Finding.Severity.LOW)
    long = found["a long title"]
    assert (len(long.rule), len(long.file)) == (100, 500)
    assert found["a line given as text"].line is None


def test_ci_still_running_with_the_last_results_lost_fails_the_check_and_keeps_the_findings(
    github: GitHubServer, repository: Repository, source: Path
) -> None:
    github.add_check_run(FULL_NAME, git(source, "rev-parse", "HEAD"), "tsc", annotations=[TSC])
    scan_repository(repository)
    shutil.rmtree(cache_path(repository))
    second = commit(source, {"README.md": "docs\n"}, "docs")
    push(github, source)
    github.add_check_run(FULL_NAME, second, "tsc", status="queued")

    scan = scan_repository(repository)

    assert scan.status == Scan.Status.FAILED
    assert "the last CI results are no longer in the cache" in scan.error
    assert ci_findings(repository)["tsc/TS2322"].status == Finding.Status.OPEN
