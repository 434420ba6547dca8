"""Pull requests for mechanical fixes, end to end: a GitHub repository served by the
fake GitHub (its git side a local bare repository), scanned, its safe fixes proposed
behind the toggle and the Operator's approval, pushed to a new branch and opened, then
followed until merged."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from controlplane.approvals import ApprovalError, decide_approval, expire_due_approvals
from controlplane.models import Approval, AuditEvent, FeatureToggle, Integration
from controlplane.tiers import StaffUser, Tier
from healthmon import code_autofix, code_findings, code_pull_requests
from healthmon.code_scans import scan_repository
from healthmon.models import Finding, PullRequest, Repository, Scan
from tests.controlplane.test_background import HANG_GUARD_SECONDS
from tests.github_server import Answer, GitHubServer
from tests.healthmon.code_repos import UNUSED_IMPORT, commit, git, make_repository
from tests.healthmon.pull_request_fakes import FakePulls
from tests.personas import make_user

PAT = "github_pat_11PULLREQUESTS0secret9876543210"
REPO = "octo-org/app"
# F841's fix (deleting the assignment) is unsafe: it must never be applied.
UNUSED_VARIABLE = "def main():\n    unused = 1\n    return 2\n"
MESSY = "numbers = [1,2,  3]\n"
FIXED_APP = "def main():\n    return 1\n"


@pytest.fixture(autouse=True)
def _code_settings(settings: Any, tmp_path: Path) -> None:
    settings.HEALTHMON_CODE_WORKDIR = tmp_path / "work"
    settings.HEALTHMON_CODE_MAX_OPEN_PRS = 3


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return make_repository(
        tmp_path / "src",
        {
            "app.py": UNUSED_IMPORT,
            "other.py": UNUSED_VARIABLE,
            "messy.py": MESSY,
            # The repository's own configuration, asking for unsafe fixes: not honoured.
            "ruff.toml": "unsafe-fixes = true\n",
        },
    )


@pytest.fixture
def bare(tmp_path: Path, source: Path) -> Path:
    bare = tmp_path / "app.git"
    git(tmp_path, "clone", "--quiet", "--bare", str(source), str(bare))
    return bare


@pytest.fixture
def github() -> Iterator[GitHubServer]:
    with GitHubServer() as server:
        server.add_token(PAT, login="code-health-bot")
        yield server


@pytest.fixture
def pulls(github: GitHubServer, bare: Path) -> FakePulls:
    return FakePulls(github, REPO, bare)


@pytest.fixture
def repository(db: Any, github: GitHubServer, pulls: FakePulls) -> Repository:
    integration = Integration(kind=Integration.Kind.GITHUB, name="github")
    integration.set_secrets({"token": PAT})
    integration.settings = {"auth_method": "token", "api_url": github.url}
    integration.save()
    return Repository.objects.create(
        name="app", kind=Repository.Kind.GITHUB, integration=integration, full_name=REPO
    )


@pytest.fixture
def operator(db: Any) -> StaffUser:
    return make_user("olivia", Tier.OPERATOR, is_staff=True)


@pytest.fixture
def autopr(db: Any) -> None:
    set_autopr(True)


def set_autopr(enabled: bool) -> None:
    FeatureToggle.objects.update_or_create(
        key=code_pull_requests.TOGGLE, defaults={"enabled": enabled}
    )
    cache.clear()  # the toggle's cache is refreshed on commit, which a test never reaches


def branches(bare: Path) -> list[str]:
    return git(bare, "for-each-ref", "--format=%(refname:short)", "refs/heads").split()


def publish(source: Path, bare: Path, files: dict[str, str]) -> str:
    sha = commit(source, files)
    git(source, "push", "--quiet", str(bare), "main")
    return sha


def scanned(repository: Repository) -> Scan:
    scan = scan_repository(repository)
    assert scan.status == Scan.Status.SUCCEEDED, scan.error
    return scan


def decide(
    pull_request: PullRequest, user: StaffUser, approve: bool, callbacks: Any
) -> PullRequest:
    assert pull_request.approval is not None
    with callbacks(execute=True):
        decide_approval(pull_request.approval, user=user, approve=approve)
    pull_request.refresh_from_db()
    return pull_request


def pull_posts(github: GitHubServer) -> list[Any]:
    return [r for r in github.requests if r.method == "POST" and r.path.endswith("/pulls")]


def actions(pull_request: PullRequest) -> list[str]:
    events = AuditEvent.objects.filter(object_id=str(pull_request.pk), action__startswith="pull_")
    return list(events.order_by("pk").values_list("action", flat=True))


def test_with_the_toggle_off_nothing_is_proposed(
    repository: Repository, bare: Path, github: GitHubServer
) -> None:
    scan = scanned(repository)

    assert Finding.objects.filter(repository=repository, rule="F401").exists()
    assert not PullRequest.objects.exists()
    assert not Approval.objects.filter(action=code_pull_requests.APPROVAL_ACTION).exists()
    assert branches(bare) == ["main"]
    with pytest.raises(code_pull_requests.NothingProposed, match=r"toggle codehealth\.autopr"):
        code_pull_requests.propose(repository, scan)


def test_the_toggle_is_seeded_off(db: Any) -> None:
    toggle = FeatureToggle.objects.get(key=code_pull_requests.TOGGLE)
    assert toggle.enabled is False


def test_a_proposal_lists_each_fix_and_waits_for_approval_with_nothing_pushed(
    repository: Repository, bare: Path, github: GitHubServer, autopr: None, settings: Any
) -> None:
    scan = scanned(repository)

    pull_request = PullRequest.objects.get(repository=repository)
    assert pull_request.status == PullRequest.Status.PROPOSED
    assert (pull_request.scan, pull_request.base) == (scan, "main")
    assert pull_request.branch.startswith("codehealth/fixes-")
    assert pull_request.branch.endswith(scan.commit[:8])
    unused_import = Finding.objects.get(repository=repository, rule="F401")
    assert pull_request.changes == [
        {
            "file": "app.py",
            "rule": "F401",
            "message": unused_import.message,
            "line": 1,
            "finding": unused_import.pk,
        },
        # Removing the import left blank lines at the top, which formatting removes.
        {
            "file": "app.py",
            "rule": "format",
            "message": "Formatting only (ruff format).",
            "line": None,
            "finding": None,
        },
        {
            "file": "messy.py",
            "rule": "format",
            "message": "Formatting only (ruff format).",
            "line": None,
            "finding": None,
        },
    ]
    assert f"| app.py:1 | F401 | `os` imported but unused | finding #{unused_import.pk} |" in (
        pull_request.body
    )
    assert "| messy.py | format | Formatting only (ruff format). | formatting only |" in (
        pull_request.body
    )
    # The unsafe fix of F841 is not made, whatever the repository's configuration says.
    assert "other.py" not in pull_request.body
    approval = pull_request.approval
    assert approval is not None
    assert (approval.status, approval.action) == ("pending", code_pull_requests.APPROVAL_ACTION)
    assert approval.required_tier == Tier.OPERATOR
    assert approval.subject == pull_request
    assert approval.proposal["branch"] == pull_request.branch
    assert approval.proposal["commit"] == pull_request.commit
    # Nothing pushed, nothing asked of GitHub's pull requests, no clone left behind.
    assert branches(bare) == ["main"]
    assert pull_posts(github) == []
    assert list((Path(settings.HEALTHMON_CODE_WORKDIR) / "pull-requests").glob("fixes-*")) == []
    assert actions(pull_request) == ["pull_request.proposed"]


def test_an_approval_pushes_the_branch_and_opens_the_pull_request(
    repository: Repository,
    bare: Path,
    github: GitHubServer,
    pulls: FakePulls,
    autopr: None,
    operator: StaffUser,
    django_capture_on_commit_callbacks: Any,
) -> None:
    scan = scanned(repository)
    proposed = PullRequest.objects.get(repository=repository)

    pull_request = decide(proposed, operator, True, django_capture_on_commit_callbacks)

    assert pull_request.status == PullRequest.Status.OPEN, pull_request.error
    assert (pull_request.number, pull_request.url) == (1, pulls.pulls[1]["html_url"])
    assert pull_request.opened_at is not None
    assert sorted(branches(bare)) == sorted(["main", pull_request.branch])
    pushed = f"refs/heads/{pull_request.branch}"
    assert git(bare, "rev-parse", pushed) == pull_request.commit
    assert git(bare, "rev-parse", f"{pushed}^") == scan.commit
    assert git(bare, "rev-parse", "refs/heads/main") == scan.commit
    assert git(bare, "show", f"{pushed}:app.py") + "\n" == FIXED_APP
    assert git(bare, "show", f"{pushed}:messy.py") == "numbers = [1, 2, 3]"
    assert git(bare, "show", f"{pushed}:other.py") + "\n" == UNUSED_VARIABLE
    assert git(bare, "log", "-1", "--format=%an <%ae>", pushed) == (
        "AI Ops Control Plane <code-health@localhost>"
    )
    assert pulls.created == [
        {
            "title": pull_request.title,
            "head": pull_request.branch,
            "base": "main",
            "body": pull_request.body,
        }
    ]
    assert actions(pull_request) == [
        "pull_request.proposed",
        "pull_request.pushed",
        "pull_request.open",
    ]
    approval = Approval.objects.get(pk=pull_request.approval_id)
    assert approval.outcome == pull_request.url
    assert AuditEvent.objects.filter(action="approval.approved", object_id=str(approval.pk))


def test_an_observer_cannot_approve_and_nothing_is_pushed(
    repository: Repository, bare: Path, autopr: None, django_capture_on_commit_callbacks: Any
) -> None:
    scanned(repository)
    pull_request = PullRequest.objects.get(repository=repository)
    observer = make_user("oscar", Tier.OBSERVER, is_staff=True)

    with pytest.raises(ApprovalError, match="cannot decide"):
        decide(pull_request, observer, True, django_capture_on_commit_callbacks)

    assert pull_request.status == PullRequest.Status.PROPOSED
    assert branches(bare) == ["main"]


def test_a_rejection_pushes_nothing(
    repository: Repository,
    bare: Path,
    github: GitHubServer,
    autopr: None,
    operator: StaffUser,
    django_capture_on_commit_callbacks: Any,
) -> None:
    scanned(repository)
    proposed = PullRequest.objects.get(repository=repository)

    pull_request = decide(proposed, operator, False, django_capture_on_commit_callbacks)

    assert pull_request.status == PullRequest.Status.REJECTED
    assert "was rejected: nothing was pushed" in pull_request.error
    assert branches(bare) == ["main"]
    assert pull_posts(github) == []
    assert actions(pull_request) == ["pull_request.proposed", "pull_request.rejected"]
    # The fixes a person rejected are not proposed again at the next scan.
    scanned(repository)
    assert PullRequest.objects.filter(repository=repository).count() == 1


def test_an_expired_approval_pushes_nothing(
    repository: Repository, bare: Path, autopr: None, django_capture_on_commit_callbacks: Any
) -> None:
    scanned(repository)
    pull_request = PullRequest.objects.get(repository=repository)
    Approval.objects.filter(pk=pull_request.approval_id).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )

    with django_capture_on_commit_callbacks(execute=True):
        assert expire_due_approvals() == 1

    pull_request.refresh_from_db()
    assert pull_request.status == PullRequest.Status.REJECTED
    assert "was expired" in pull_request.error
    assert branches(bare) == ["main"]


def test_the_default_branch_is_never_pushed(
    repository: Repository,
    bare: Path,
    github: GitHubServer,
    autopr: None,
    operator: StaffUser,
    django_capture_on_commit_callbacks: Any,
) -> None:
    scan = scanned(repository)
    proposed = PullRequest.objects.get(repository=repository)
    # Whatever a stored row says (a bug, a hand edit), the push refuses the default branch.
    PullRequest.objects.filter(pk=proposed.pk).update(branch="main")
    proposed.refresh_from_db()

    pull_request = decide(proposed, operator, True, django_capture_on_commit_callbacks)

    assert pull_request.status == PullRequest.Status.FAILED
    assert pull_request.error == "Refused to push to main: it is the default branch or the base."
    assert branches(bare) == ["main"]
    assert git(bare, "rev-parse", "refs/heads/main") == scan.commit
    assert pull_posts(github) == []
    for branch in ("main", "refs/heads/main", "release", "codehealth/"):
        with pytest.raises(code_autofix.PushRefused):
            code_autofix.refuse_unsafe_branch(branch, "main")
    code_autofix.refuse_unsafe_branch("codehealth/fixes-1", "main")  # a product branch


def test_at_most_the_configured_number_of_product_prs_are_open(
    repository: Repository, source: Path, bare: Path, autopr: None, settings: Any
) -> None:
    settings.HEALTHMON_CODE_MAX_OPEN_PRS = 1
    scanned(repository)
    assert PullRequest.objects.filter(repository=repository).count() == 1

    publish(source, bare, {"more.py": "import sys\n"})
    scan = scanned(repository)

    assert PullRequest.objects.filter(repository=repository).count() == 1
    with pytest.raises(code_pull_requests.NothingProposed, match="MAX_OPEN_PRS=1"):
        code_pull_requests.propose(repository, scan)

    settings.HEALTHMON_CODE_MAX_OPEN_PRS = 3
    second = code_pull_requests.propose(repository, scan)
    assert {change["file"] for change in second.changes if change["finding"]} == {
        "app.py",
        "more.py",
    }
    # The same fixes are not proposed twice while a proposal holds them.
    with pytest.raises(code_pull_requests.NothingProposed, match="already"):
        code_pull_requests.propose(repository, scan)


def test_a_merge_on_github_is_synced_at_the_next_scan(
    repository: Repository,
    pulls: FakePulls,
    autopr: None,
    operator: StaffUser,
    django_capture_on_commit_callbacks: Any,
) -> None:
    scanned(repository)
    proposed = PullRequest.objects.get(repository=repository)
    pull_request = decide(proposed, operator, True, django_capture_on_commit_callbacks)
    assert pull_request.status == PullRequest.Status.OPEN, pull_request.error

    scanned(repository)
    pull_request.refresh_from_db()
    assert pull_request.status == PullRequest.Status.OPEN

    pulls.merge(pull_request.number or 0)
    scanned(repository)

    pull_request.refresh_from_db()
    assert pull_request.status == PullRequest.Status.MERGED
    assert pull_request.merged_at is not None
    assert actions(pull_request)[-1] == "pull_request.merged"


def test_a_pull_request_closed_on_github_is_closed_here(
    repository: Repository,
    pulls: FakePulls,
    autopr: None,
    operator: StaffUser,
    django_capture_on_commit_callbacks: Any,
) -> None:
    scanned(repository)
    proposed = PullRequest.objects.get(repository=repository)
    pull_request = decide(proposed, operator, True, django_capture_on_commit_callbacks)
    pulls.close(pull_request.number or 0)

    assert code_pull_requests.sync_open_pull_requests(repository) == 1

    pull_request.refresh_from_db()
    assert (pull_request.status, pull_request.merged_at) == (PullRequest.Status.CLOSED, None)
    assert pull_request.closed_at is not None


def test_a_push_the_repository_refuses_fails_with_git_s_reason(
    repository: Repository,
    bare: Path,
    github: GitHubServer,
    autopr: None,
    operator: StaffUser,
    django_capture_on_commit_callbacks: Any,
) -> None:
    scanned(repository)
    proposed = PullRequest.objects.get(repository=repository)
    hook = bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'pushes are frozen for the release' >&2\nexit 1\n")
    hook.chmod(0o755)

    pull_request = decide(proposed, operator, True, django_capture_on_commit_callbacks)

    assert pull_request.status == PullRequest.Status.FAILED
    assert pull_request.error.startswith("git push failed:")
    assert "pre-receive hook declined" in pull_request.error
    assert branches(bare) == ["main"]
    assert pull_posts(github) == []
    assert actions(pull_request) == ["pull_request.proposed", "pull_request.failed"]


def test_github_refusing_the_pull_request_fails_it_saying_the_branch_was_pushed(
    repository: Repository,
    bare: Path,
    pulls: FakePulls,
    autopr: None,
    operator: StaffUser,
    django_capture_on_commit_callbacks: Any,
) -> None:
    scanned(repository)
    proposed = PullRequest.objects.get(repository=repository)
    pulls.refuse_next = Answer(403, {"message": "Resource not accessible by integration"})

    pull_request = decide(proposed, operator, True, django_capture_on_commit_callbacks)

    assert pull_request.status == PullRequest.Status.FAILED
    assert pull_request.error == (
        f"The branch {pull_request.branch} was pushed, but GitHub answered 403 for "
        f"/repos/{REPO}/pulls: Resource not accessible by integration"
    )
    assert pull_request.branch in branches(bare)


def test_nothing_is_proposed_when_the_safe_fixes_fix_no_finding(
    db: Any, tmp_path: Path, github: GitHubServer, autopr: None
) -> None:
    unfixable = make_repository(tmp_path / "plain", {"other.py": UNUSED_VARIABLE})
    bare = tmp_path / "plain.git"
    git(tmp_path, "clone", "--quiet", "--bare", str(unfixable), str(bare))
    FakePulls(github, "octo-org/plain", bare)
    integration = Integration(kind=Integration.Kind.GITHUB, name="github")
    integration.set_secrets({"token": PAT})
    integration.settings = {"auth_method": "token", "api_url": github.url}
    integration.save()
    repository = Repository.objects.create(
        name="plain",
        kind=Repository.Kind.GITHUB,
        integration=integration,
        full_name="octo-org/plain",
    )

    scan = scanned(repository)

    assert Finding.objects.get(repository=repository).rule == "F841"
    assert not PullRequest.objects.exists()
    with pytest.raises(code_pull_requests.NothingProposed, match="fix none of the open findings"):
        code_pull_requests.propose(repository, scan)


def test_propose_fixes_proposes_now_or_says_why_not(
    repository: Repository, capsys: pytest.CaptureFixture[str]
) -> None:
    scanned(repository)

    with pytest.raises(SystemExit) as exited:
        call_command("propose_fixes", "--repo", "app")
    assert exited.value.code == 1
    assert "nothing proposed: Automatic pull requests are off" in capsys.readouterr().out

    set_autopr(True)
    call_command("propose_fixes", "--repo", "app")

    pull_request = PullRequest.objects.get(repository=repository)
    out = capsys.readouterr().out
    assert f"waiting for approval #{pull_request.approval_id}" in out


def test_an_approval_after_the_toggle_was_switched_off_pushes_nothing(
    repository: Repository,
    bare: Path,
    github: GitHubServer,
    autopr: None,
    operator: StaffUser,
    django_capture_on_commit_callbacks: Any,
) -> None:
    scanned(repository)
    proposed = PullRequest.objects.get(repository=repository)
    set_autopr(False)

    pull_request = decide(proposed, operator, True, django_capture_on_commit_callbacks)

    assert pull_request.status == PullRequest.Status.FAILED
    assert pull_request.error == (
        "The toggle codehealth.autopr.enabled was switched off: nothing was pushed."
    )
    assert branches(bare) == ["main"]
    assert pull_posts(github) == []


def test_the_approvals_page_decides_it_under_its_tier_rules(
    client: Any,
    repository: Repository,
    bare: Path,
    autopr: None,
    operator: StaffUser,
    django_capture_on_commit_callbacks: Any,
) -> None:
    scanned(repository)
    pull_request = PullRequest.objects.get(repository=repository)
    decide_url = reverse("approval_decide", args=[pull_request.approval_id])
    client.force_login(operator)
    page = client.get(reverse("approvals")).content.decode()
    assert f"#{pull_request.approval_id} <code>{code_pull_requests.APPROVAL_ACTION}</code>" in page
    assert pull_request.branch in page

    client.force_login(make_user("oscar", Tier.OBSERVER, is_staff=True))
    assert client.post(decide_url, {"decision": "approve"}).status_code == 403
    assert branches(bare) == ["main"]

    client.force_login(operator)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(decide_url, {"decision": "approve"})

    pull_request.refresh_from_db()
    assert pull_request.status == PullRequest.Status.OPEN, pull_request.error
    assert pull_request.branch in branches(bare)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_proposals_at_once_keep_to_the_limit(
    repository: Repository, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.HEALTHMON_CODE_MAX_OPEN_PRS = 1
    scan = scanned(repository)  # the toggle is off: nothing proposed yet
    set_autopr(True)
    # Both have prepared their fixes before either stores its pull request.
    both_prepared = threading.Barrier(2, timeout=HANG_GUARD_SECONDS)
    commit_fixes = code_autofix.commit_fixes

    def commit_when_both_prepared(*args: Any) -> str:
        both_prepared.wait()
        return commit_fixes(*args)

    monkeypatch.setattr(code_autofix, "commit_fixes", commit_when_both_prepared)
    outcomes: list[str] = []

    def propose() -> None:
        try:
            code_pull_requests.propose(Repository.objects.get(pk=repository.pk), scan)
            outcomes.append("proposed")
        except code_pull_requests.NothingProposed as reason:
            outcomes.append(str(reason))
        finally:
            connection.close()

    threads = [threading.Thread(target=propose) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG_GUARD_SECONDS)

    assert len(outcomes) == 2
    assert outcomes.count("proposed") == 1
    assert any("HEALTHMON_CODE_MAX_OPEN_PRS=1" in outcome for outcome in outcomes)
    assert PullRequest.objects.filter(repository=repository).count() == 1


def test_a_finding_marked_intended_is_left_as_it_is(
    repository: Repository,
    source: Path,
    bare: Path,
    autopr: None,
    operator: StaffUser,
    django_capture_on_commit_callbacks: Any,
) -> None:
    set_autopr(False)
    scanned(repository)
    code_findings.mark_intended(Finding.objects.get(repository=repository, rule="F401"))
    publish(source, bare, {"more.py": "import sys\n"})
    set_autopr(True)

    scanned(repository)

    proposed = PullRequest.objects.get(repository=repository)
    assert [(c["file"], c["rule"]) for c in proposed.changes if c["finding"]] == [
        ("more.py", "F401")
    ]
    pull_request = decide(proposed, operator, True, django_capture_on_commit_callbacks)
    assert pull_request.status == PullRequest.Status.OPEN, pull_request.error
    assert git(bare, "show", f"refs/heads/{pull_request.branch}:app.py") + "\n" == UNUSED_IMPORT
    assert git(bare, "show", f"refs/heads/{pull_request.branch}:more.py") == ""
