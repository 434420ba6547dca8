"""Pull requests for mechanical fixes: proposed after a scan, pushed and opened on
GitHub only once an Operator approves, followed until merged or closed.

A pull request moves only through `_move` along `TRANSITIONS` (each move audited):
proposed (waiting for its approval) -> open (pushed and opened on GitHub), rejected
(rejected or expired: nothing pushed) or failed (the push or GitHub's API failed: the
reason is kept); open -> merged or closed, as GitHub says at each scan.

Safety rails: nothing is proposed while the toggle `codehealth.autopr.enabled` is off
(seeded off) or while the repository has `HEALTHMON_CODE_MAX_OPEN_PRS` proposed or open
product PRs; fixes all held by a proposed or open PR already (or by one a person
rejected) are not proposed again; a finding marked intended is not fixed; nothing is
pushed before an Operator approves, and the push is refused for the default branch
(`code_autofix`). The fixes are prepared again at approval and must give the very
commit that was approved.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from controlplane import audit
from controlplane.approvals import register_waiter, request_approval
from controlplane.github import GitHubError
from controlplane.github_integration import client_for
from controlplane.models import Approval
from controlplane.models.toggles import toggle_enabled
from controlplane.service_accounts import service_account
from controlplane.tiers import StaffUser, Tier
from healthmon import code_autofix
from healthmon.code_autofix import Change
from healthmon.code_checkout import source_of
from healthmon.code_checks import CheckFailed
from healthmon.code_checks import ruff as ruff_check
from healthmon.models import Finding, PullRequest, Repository, Scan

log = logging.getLogger(__name__)

TOGGLE = "codehealth.autopr.enabled"
APPROVAL_ACTION = "healthmon.open_pull_request"
SERVICE = "codehealth"

Status = PullRequest.Status
TRANSITIONS: dict[str, set[str]] = {
    Status.PROPOSED: {Status.OPEN, Status.REJECTED, Status.FAILED},
    Status.OPEN: {Status.MERGED, Status.CLOSED},
    Status.MERGED: set(),
    Status.CLOSED: set(),
    Status.REJECTED: set(),
    Status.FAILED: set(),
}
# The product's PRs that count against HEALTHMON_CODE_MAX_OPEN_PRS.
ACTIVE = (Status.PROPOSED, Status.OPEN)


class NothingProposed(Exception):
    """Why no pull request was proposed (a rail, or nothing to fix)."""


def _move(
    pull_request: PullRequest, to: str, actor: StaffUser | None = None, **fields: Any
) -> bool:
    """Move `pull_request` to `to` if it is still where it was (audited); False when
    something else moved it first."""
    old = pull_request.status
    if to not in TRANSITIONS[old]:
        raise ValueError(f"Pull request #{pull_request.pk} is {old} and cannot become {to}.")
    with transaction.atomic():
        moved = PullRequest.objects.filter(pk=pull_request.pk, status=old).update(
            status=to, **fields
        )
        if moved:
            pull_request.status = to
            for name, value in fields.items():
                setattr(pull_request, name, value)
            after = {"status": to, **{name: str(value) for name, value in fields.items()}}
            audit.record(
                f"pull_request.{to}", pull_request, before={"status": old}, after=after, actor=actor
            )
    return bool(moved)


def timeout() -> float:
    return float(settings.HEALTHMON_CODE_SCAN_TIMEOUT_SECONDS)


# -- proposing ----------------------------------------------------------------------------------


def propose(repository: Repository, scan: Scan | None = None) -> PullRequest:
    """Prepare the mechanical fixes of `scan` (the latest successful one by default)
    and ask for approval to open them as a pull request. Raises `NothingProposed`
    saying why not, `CheckFailed` when git, ruff or GitHub failed."""
    if not toggle_enabled(TOGGLE):
        raise NothingProposed(f"Automatic pull requests are off (toggle {TOGGLE}).")
    if repository.kind != Repository.Kind.GITHUB:
        raise NothingProposed("Only GitHub repositories receive pull requests.")
    scan = scan or repository.scans.filter(status=Scan.Status.SUCCEEDED).first()
    if scan is None or scan.status != Scan.Status.SUCCEEDED or not scan.commit:
        raise NothingProposed("No successful scan to fix.")
    _refuse_past_the_cap(repository)
    ruff_findings = repository.findings.filter(check_name=ruff_check.NAME)
    findings = list(ruff_findings.filter(status=Finding.Status.OPEN))
    if not findings:
        raise NothingProposed("No open ruff findings.")
    # What an Operator marked intended or ignored stays as it is.
    kept = [Finding.Status.INTENDED, Finding.Status.IGNORED]
    keep = sorted(set(ruff_findings.filter(status__in=kept).values_list("file", "rule")))
    source = source_of(repository, timeout())
    when = timezone.now().replace(microsecond=0)
    title = f"Code health: mechanical fixes for {scan.commit[:8]}"
    with code_autofix.fix_clone(source, scan.commit, timeout()) as path:
        changes = code_autofix.apply_fixes(path, timeout(), findings, keep)
        fixed = {change.finding for change in changes if change.finding is not None}
        if not fixed:
            raise NothingProposed("Ruff's safe fixes fix none of the open findings.")
        _refuse_already_proposed(repository, fixed)
        commit = code_autofix.commit_fixes(path, title, when, timeout())
    with transaction.atomic():
        Repository.objects.select_for_update().filter(pk=repository.pk).first()
        _refuse_past_the_cap(repository)  # counted again under the repository's lock
        pull_request = PullRequest.objects.create(
            repository=repository,
            scan=scan,
            base=scan.branch,
            branch=_branch_name(repository, when, scan.commit),
            title=title,
            body=describe(scan, changes),
            changes=[change.as_json() for change in changes],
            commit=commit,
        )
        audit.record("pull_request.proposed", pull_request, after=audit.snapshot(pull_request))
        pull_request.approval = request_approval(
            action=APPROVAL_ACTION,
            requested_by=service_account(SERVICE),
            reason=(
                f"Code health proposes a pull request on {repository.full_name}: "
                f"{len(fixed)} finding(s) fixed by ruff's safe fixes and formatting, on the "
                f"new branch {pull_request.branch} against {pull_request.base}. Approve to "
                "push the branch and open the pull request; nothing is pushed before."
            ),
            subject=pull_request,
            required_tier=Tier.OPERATOR,
            proposal={
                "repository": repository.full_name,
                "base": pull_request.base,
                "branch": pull_request.branch,
                "scanned_commit": scan.commit,
                "commit": commit,
                "committed_at": when.isoformat(),
                "kept": keep,
                "findings": sorted(fixed),
            },
        )
        pull_request.save(update_fields=["approval"])
    return pull_request


def _refuse_past_the_cap(repository: Repository) -> None:
    active = repository.pull_requests.filter(status__in=ACTIVE).count()
    limit = settings.HEALTHMON_CODE_MAX_OPEN_PRS
    if active >= limit:
        raise NothingProposed(
            f"{repository} has {active} proposed or open product pull request(s), the most "
            f"allowed (HEALTHMON_CODE_MAX_OPEN_PRS={limit})."
        )


def _refuse_already_proposed(repository: Repository, fixed: set[int]) -> None:
    """The same fixes are not proposed again while a PR holds them, nor after a person
    rejected them (an expired proposal may come back: nobody looked at it)."""
    holding = repository.pull_requests.filter(
        Q(status__in=ACTIVE) | Q(status=Status.REJECTED, approval__status=Approval.Status.REJECTED)
    )
    covered: set[int] = set()
    for changes in holding.values_list("changes", flat=True):
        covered.update(change.get("finding") for change in changes or [] if change.get("finding"))
    if fixed <= covered:
        raise NothingProposed(
            "Every fix is in a proposed or open pull request already, or was rejected."
        )


def _branch_name(repository: Repository, when: datetime, commit: str) -> str:
    name = f"{code_autofix.BRANCH_PREFIX}fixes-{when:%Y%m%d}-{commit[:8]}"
    taken = set(repository.pull_requests.values_list("branch", flat=True))
    serial = 2
    branch = name
    while branch in taken:
        branch, serial = f"{name}-{serial}", serial + 1
    return branch


def describe(scan: Scan, changes: list[Change]) -> str:
    """The PR body: every change, with the finding it fixes."""
    lines = [
        f"Mechanical fixes proposed by the control plane's code health after scan "
        f"#{scan.pk} of `{scan.commit[:12]}`: ruff's safe fixes (`ruff check --fix`, no "
        "unsafe fixes) and `ruff format`, with this repository's own ruff configuration.",
        "",
        "| File | Rule | Message | Fixes |",
        "| --- | --- | --- | --- |",
    ]
    for change in changes:
        where = f"{change.file}:{change.line}" if change.line else change.file
        fixes = "formatting only" if change.finding is None else f"finding #{change.finding}"
        cells = [where, change.rule, change.message, fixes]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


# -- the decision -------------------------------------------------------------------------------


def pull_request_decided(approval: Approval) -> None:
    """The approval waiter: approved, the branch is pushed and the PR opened;
    rejected or expired, nothing is pushed."""
    pull_request = (
        PullRequest.objects.select_related("repository__integration")
        .filter(approval=approval, status=Status.PROPOSED)
        .first()
    )
    # One decision is acted on once, even if a waiter is called again.
    if pull_request is None or not Approval.objects.filter(pk=approval.pk, outcome="").update(
        outcome="Pushing…"
    ):
        return
    if approval.status == Approval.Status.APPROVED:
        open_pull_request(pull_request, approval, actor=approval.decided_by)
    else:
        _move(
            pull_request,
            Status.REJECTED,
            actor=approval.decided_by,
            closed_at=timezone.now(),
            error=f"Approval #{approval.pk} was {approval.status}: nothing was pushed.",
        )
    outcome = pull_request.url or pull_request.error or pull_request.status
    Approval.objects.filter(pk=approval.pk).update(outcome=outcome[:2000])


def open_pull_request(
    pull_request: PullRequest, approval: Approval, actor: StaffUser | None = None
) -> None:
    """Prepare the approved fixes again, push them to their branch and open the pull
    request; any failure ends the PR failed with its reason."""
    repository = pull_request.repository
    proposal = approval.proposal or {}
    pushed = False
    try:
        if not toggle_enabled(TOGGLE):
            raise CheckFailed(f"The toggle {TOGGLE} was switched off: nothing was pushed.")
        source = source_of(repository, timeout())
        with code_autofix.fix_clone(source, str(proposal.get("scanned_commit")), timeout()) as path:
            kept = [(str(file), str(rule)) for file, rule in proposal.get("kept") or []]
            code_autofix.apply_fixes(path, timeout(), keep=kept)
            when = datetime.fromisoformat(str(proposal.get("committed_at")))
            commit = code_autofix.commit_fixes(path, pull_request.title, when, timeout())
            if not commit or commit != pull_request.commit:
                raise CheckFailed(
                    "The fixes no longer come out as approved (ruff or its configuration "
                    "changed): nothing was pushed; the next scan proposes them again."
                )
            code_autofix.push(
                path, source, commit, pull_request.branch, pull_request.base, timeout()
            )
        pushed = True
        audit.record(
            "pull_request.pushed",
            pull_request,
            after={"branch": pull_request.branch, "commit": commit},
            actor=actor,
        )
        if repository.integration is None:
            raise CheckFailed("The repository has no GitHub integration.")
        with client_for(repository.integration) as client:
            answer = client.request(
                "POST",
                f"/repos/{repository.full_name}/pulls",
                json={
                    "title": pull_request.title,
                    "head": pull_request.branch,
                    "base": pull_request.base,
                    "body": pull_request.body,
                },
            ).json()
        if not isinstance(answer, dict) or not answer.get("number"):
            raise CheckFailed("GitHub's answer to opening the pull request has no number.")
    except (CheckFailed, GitHubError, ValueError) as error:
        reason = str(error)
        if pushed:
            reason = f"The branch {pull_request.branch} was pushed, but {reason}"
        _move(pull_request, Status.FAILED, actor=actor, error=reason)
        return
    except Exception as error:  # a bug must not leave the PR waiting for a push forever
        log.exception("Opening %s crashed", pull_request)
        crashed = f"Opening the pull request crashed: {type(error).__name__}: {error}"
        _move(pull_request, Status.FAILED, actor=actor, error=crashed)
        return
    _move(
        pull_request,
        Status.OPEN,
        actor=actor,
        number=int(answer["number"]),
        url=str(answer.get("html_url") or ""),
        opened_at=timezone.now(),
    )


# -- following them on GitHub -------------------------------------------------------------------


def sync_open_pull_requests(repository: Repository) -> int:
    """Refresh the open product PRs of `repository` from GitHub: merged or closed
    there, so here. The number that moved."""
    pull_requests = list(repository.pull_requests.filter(status=Status.OPEN, number__isnull=False))
    if not pull_requests or repository.integration is None:
        return 0
    moved = 0
    with client_for(repository.integration) as client:
        for pull_request in pull_requests:
            path = f"/repos/{repository.full_name}/pulls/{pull_request.number}"
            try:
                answer = client.get(path)
            except GitHubError as error:
                log.warning("Could not refresh %s: %s", pull_request, error)
                continue
            if not isinstance(answer, dict) or answer.get("state") != "closed":
                continue
            closed_at = _github_time(answer.get("closed_at"))
            if answer.get("merged_at"):
                merged_at = _github_time(answer.get("merged_at"))
                moved += _move(
                    pull_request, Status.MERGED, merged_at=merged_at, closed_at=closed_at
                )
            else:
                moved += _move(pull_request, Status.CLOSED, closed_at=closed_at)
    return moved


def _github_time(value: Any) -> datetime:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return timezone.now()


def after_scan(scan: Scan) -> None:
    """At the end of every scan: refresh the repository's open PRs, then, after a
    successful scan, propose its fixes. Never fails the scan: a fault is logged."""
    repository = scan.repository
    if repository.kind != Repository.Kind.GITHUB:
        return
    try:
        sync_open_pull_requests(repository)
    except Exception:
        log.exception("Refreshing the pull requests of %s failed", repository)
    if scan.status != Scan.Status.SUCCEEDED:
        return
    try:
        pull_request = propose(repository, scan)
    except NothingProposed as reason:
        log.info("No pull request proposed for %s: %s", repository, reason)
    except Exception:
        log.exception("Proposing fixes for %s failed", repository)
    else:
        log.info("Proposed %s, waiting for approval #%s", pull_request, pull_request.approval_id)


def register_waiters() -> None:
    register_waiter(APPROVAL_ACTION, pull_request_decided)
