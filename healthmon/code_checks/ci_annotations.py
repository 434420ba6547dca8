"""Static analysis from the repository's own CI: the annotations of the check runs
GitHub holds for the scanned commit (`GET /repos/{full_name}/commits/{sha}/check-runs`,
then each completed run's `/check-runs/{id}/annotations`), so what tsc, eslint, mypy or
any tool the repository runs in its Actions says shows up without the product running
it. GitHub repositories only: a local one has no check runs.

Severity by annotation level: failure high, warning medium, notice low. A finding's
rule is "<check run name>/<annotation title, or its level>"; its identity is read from
the checkout's lines, as ruff's is, so it survives lines moving.

CI still running: a check run not yet completed on the scanned commit keeps what the
run of that name reported at the last scan (carried from the cache), so its findings
are not marked fixed because CI has not finished; a commit with no check run at all
keeps every previous result (GitHub creates the runs a little after a push, so "none"
means "not yet"). `state["waiting_for"]` names the runs kept so and `state["note"]`
says why. A run name missing from a commit whose other runs are there is taken as
gone, and its findings are fixed. Should the cache have lost the last results while
CI is still running, the check fails with that reason (its findings stay as they
were) rather than report nothing and mark them all fixed.

Cached by commit: once every run of a commit has completed, another scan of the same
commit asks GitHub nothing. Bounded: at most HEALTHMON_CODE_CI_MAX_CHECK_RUNS runs and
HEALTHMON_CODE_CI_MAX_ANNOTATIONS annotations per run are read, a page of 100 at a
time (`state["truncated"]` names the runs cut short).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from controlplane.github import GitHubClient, GitHubError, GitHubRateLimited
from healthmon.code_checks import (
    CheckFailed,
    Reported,
    ScanContext,
    as_json,
    distinct,
    from_json,
    identity_of,
)
from healthmon.models import Finding, Repository

NAME = "ci"
PER_PAGE = 100
SEVERITY_OF_LEVEL = {
    "failure": Finding.Severity.HIGH,
    "warning": Finding.Severity.MEDIUM,
    "notice": Finding.Severity.LOW,
}
# Finding's columns: what GitHub sends is cut to fit rather than fail the scan.
RULE_LENGTH = 100
FILE_LENGTH = 500
LAST_LINE = 2**31 - 1


def run(context: ScanContext) -> list[Reported]:
    repository = context.repository
    if repository.kind != Repository.Kind.GITHUB:
        return []
    known = _results(context, context.commit)
    if known is not None and known["complete"]:
        by_run = known["runs"]  # every run of this commit had finished: nothing to ask
        context.state.update(commit=context.commit, complete=True, waiting_for=[])
    else:
        by_run = _read_commit(context)
    return distinct([item for name in sorted(by_run) for item in by_run[name]])


def _read_commit(context: ScanContext) -> dict[str, list[Reported]]:
    """What the commit's check runs say now, with the previous results kept for the
    runs still going; stored under the commit."""
    from controlplane.github_integration import client_for

    integration = context.repository.integration
    if integration is None:
        raise CheckFailed("A GitHub repository needs its integration.")
    full_name = context.repository.full_name
    previous = _results(context, str(context.previous_state.get("commit") or ""))
    kept = previous["runs"] if previous else {}
    by_run: dict[str, list[Reported]] = {}
    waiting: set[str] = set()
    truncated: list[str] = []
    try:
        with client_for(integration) as client:
            runs, cut = _pages(
                client,
                context,
                f"/repos/{full_name}/commits/{context.commit}/check-runs",
                settings.HEALTHMON_CODE_CI_MAX_CHECK_RUNS,
                key="check_runs",
            )
            truncated += ["(check runs)"] if cut else []
            for done, check_run in enumerate(runs):
                name = str(check_run.get("name") or f"check run {check_run.get('id')}")
                if check_run.get("status") == "completed":
                    annotations, cut = _annotations(client, context, full_name, check_run)
                    truncated += [name] if cut else []
                    by_run.setdefault(name, []).extend(_reported(context, name, annotations))
                else:
                    waiting.add(name)
                context.progress(done + 1, len(runs))
    except GitHubRateLimited as error:
        raise CheckFailed(str(error)) from error
    except GitHubError as error:
        if error.status == 403:
            raise CheckFailed(
                f"{error}. The integration needs read access to checks (Checks: read) "
                f"on {full_name}."
            ) from error
        raise CheckFailed(str(error)) from error
    if (not runs or waiting) and previous is None and _open_findings(context):
        # Without the last results, carrying them is impossible and reporting none
        # would mark them all fixed: the check fails and they stay as they are.
        raise CheckFailed(
            f"CI has not finished on {context.commit[:12]} and the last CI results are "
            "no longer in the cache: the CI findings stay as they were until CI finishes."
        )
    note = ""
    if not runs:
        note = "GitHub has no check run for this commit yet: the previous results are kept."
        waiting = set(kept)
        by_run = dict(kept)
    else:
        waiting -= set(by_run)  # a name with a finished run is read, not waited for
        by_run.update({name: kept[name] for name in waiting if name in kept})
        if waiting:
            note = "CI is still running: the last results of the runs not finished are kept."
    complete = bool(runs) and not waiting
    context.store(
        f"results-{context.commit}",
        {"complete": complete, "runs": {name: as_json(items) for name, items in by_run.items()}},
    )
    context.state.update(
        commit=context.commit, complete=complete, waiting_for=sorted(waiting), note=note
    )
    if truncated:
        context.state["truncated"] = truncated
    return by_run


def _annotations(
    client: GitHubClient, context: ScanContext, full_name: str, check_run: dict[str, Any]
) -> tuple[list[dict[str, Any]], bool]:
    output = check_run.get("output")
    if isinstance(output, dict) and output.get("annotations_count") == 0:
        return [], False  # GitHub says how many: no request for none
    return _pages(
        client,
        context,
        f"/repos/{full_name}/check-runs/{check_run.get('id')}/annotations",
        settings.HEALTHMON_CODE_CI_MAX_ANNOTATIONS,
    )


def _pages(
    client: GitHubClient, context: ScanContext, path: str, limit: int, key: str = ""
) -> tuple[list[dict[str, Any]], bool]:
    """Up to `limit` items of a paginated list (under `key` of each page when given),
    and whether there were more."""
    items: list[dict[str, Any]] = []
    page = 1
    while True:
        context.remaining()
        answer = client.get(path, params={"per_page": PER_PAGE, "page": page})
        found = answer.get(key) if key and isinstance(answer, dict) else answer
        if not isinstance(found, list):
            raise CheckFailed(f"GitHub's answer for {path} is not a list.")
        items += [item for item in found if isinstance(item, dict)]
        if len(items) >= limit:
            return items[:limit], len(items) > limit or len(found) == PER_PAGE
        if len(found) < PER_PAGE:
            return items, False
        page += 1


def _reported(
    context: ScanContext, run_name: str, annotations: list[dict[str, Any]]
) -> list[Reported]:
    reported = []
    for annotation in annotations:
        level = str(annotation.get("annotation_level") or "notice")
        title = str(annotation.get("title") or "").strip() or level
        rule = f"{run_name}/{title}"[:RULE_LENGTH]
        file = str(annotation.get("path") or "").removeprefix("./")[:FILE_LENGTH]
        message = str(annotation.get("message") or "").strip()
        first = _line(annotation.get("start_line"))
        last = max(_line(annotation.get("end_line")), first)
        lines = _lines(context, file)
        if not lines:
            # Not a file of the checkout (a workflow-level annotation): the message
            # is what tells one problem from another.
            lines, first, last = [message], 1, 1
        reported.append(
            Reported(
                check=NAME,
                rule=rule,
                severity=SEVERITY_OF_LEVEL.get(level, Finding.Severity.LOW),
                message=message,
                file=file,
                line=_line(annotation.get("start_line")) or None,
                identity=identity_of(NAME, rule, file, lines, first, last),
            )
        )
    return reported


def _results(context: ScanContext, commit: str) -> dict[str, Any] | None:
    """The results kept for `commit`: {"complete": bool, "runs": {name: [Reported]}}."""
    if not commit:
        return None
    stored = context.cached(f"results-{commit}")
    if not isinstance(stored, dict) or not isinstance(stored.get("runs"), dict):
        return None
    try:
        runs = {name: from_json(items) for name, items in stored["runs"].items()}
    except TypeError:
        return None
    return {"complete": bool(stored.get("complete")), "runs": runs}


def _open_findings(context: ScanContext) -> bool:
    findings = context.repository.findings.filter(check_name=NAME, status=Finding.Status.OPEN)
    return findings.exists()


def _line(value: Any) -> int:
    return value if isinstance(value, int) and 0 < value <= LAST_LINE else 0


def _lines(context: ScanContext, file: str) -> list[str]:
    if file not in context.files:
        return []
    try:
        return (context.path / file).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
