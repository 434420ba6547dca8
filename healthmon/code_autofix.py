"""The mechanical fixes of a code-health pull request, made in a clone of its own.

A clone of the scanned commit (under `HEALTHMON_CODE_WORKDIR`/pull-requests, never
the scan's checkout, removed when done) gets ruff's safe fixes (`ruff check --fix
--no-unsafe-fixes`: unsafe fixes stay off even when the repository's configuration
turns them on) and then `ruff format`, both with the repository's own ruff
configuration (ruff's defaults when it has none). A finding an Operator marked
intended is left as it is: its rule is not fixed in its file. Which findings the fixes fixed is
read by linting the tree again between the two steps: an open finding whose identity
ruff no longer reports is fixed; files `ruff format` changed are listed as
formatting only.

The fix commit carries the product as author and a date given by the caller, so
preparing the same fixes of the same commit again gives the same commit id: what is
pushed after an approval is exactly what was approved. A push goes to a new branch
under `codehealth/` only; the default branch (or the PR's base) is refused here,
whatever the caller asks.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from django.conf import settings

from healthmon.code_checkout import Source, git
from healthmon.code_checks import CheckFailed, distinct
from healthmon.code_checks import ruff as ruff_check
from healthmon.models import Finding

BRANCH_PREFIX = "codehealth/"
FORMATTING = "format"


class PushRefused(CheckFailed):
    """The branch is not one the product may push to (the default branch, the base)."""


@dataclass(frozen=True)
class Change:
    """One change of a fix commit: the finding it fixes, or a file only formatted."""

    file: str
    rule: str
    message: str
    line: int | None = None
    finding: int | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@contextmanager
def fix_clone(source: Source, commit: str, timeout: float) -> Iterator[Path]:
    """A fresh clone of `commit` alone, removed when the block ends."""
    root = Path(settings.HEALTHMON_CODE_WORKDIR) / "pull-requests"
    root.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="fixes-", dir=root))
    try:
        git(["init", "--quiet"], timeout, cwd=path)
        git(
            ["fetch", "--quiet", "--depth", "1", source.url, commit],
            timeout,
            cwd=path,
            env=source.env,
        )
        git(["checkout", "--quiet", "--detach", "FETCH_HEAD"], timeout, cwd=path)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def apply_fixes(
    path: Path,
    timeout: float,
    findings: Sequence[Finding] | None = None,
    keep: Collection[tuple[str, str]] = (),
) -> list[Change]:
    """Apply ruff's safe fixes and formatting to the clone at `path`, leaving the
    rules of `keep` ((file, rule): findings an Operator marked intended) unfixed in
    their files; the changes, each with the finding of `findings` it fixes (none
    asked: no mapping is made)."""
    configuration = _configuration_arguments(path)
    fix = ["check", "--fix", "--no-unsafe-fixes", "--exit-zero", *configuration, *_kept(keep)]
    _ruff(path, [*fix, "."], timeout)
    changes = _fixed(path, timeout, findings) if findings is not None else []
    git(["add", "--all"], timeout, cwd=path)
    try:
        _ruff(path, ["format", *configuration, "."], timeout)
    except CheckFailed:
        # A file ruff cannot parse: the fixes stand, the formatting is left out.
        git(["checkout", "--", "."], timeout, cwd=path)
    formatted = git(["diff", "--name-only", "-z"], timeout, cwd=path).split("\0")
    for name in sorted(filter(None, formatted)):
        changes.append(Change(name, FORMATTING, "Formatting only (ruff format)."))
    return changes


def commit_fixes(path: Path, message: str, when: datetime, timeout: float) -> str:
    """Commit everything changed in the clone, as the product, dated `when`; the
    commit id, or '' when nothing changed."""
    git(["add", "--all"], timeout, cwd=path)
    if not git(["status", "--porcelain"], timeout, cwd=path).strip():
        return ""
    name, email = parseaddr(settings.HEALTHMON_CODE_PR_AUTHOR)
    date = when.isoformat()
    env = {
        "GIT_AUTHOR_NAME": name or "Code health",
        "GIT_AUTHOR_EMAIL": email or "code-health@localhost",
        "GIT_COMMITTER_NAME": name or "Code health",
        "GIT_COMMITTER_EMAIL": email or "code-health@localhost",
        "GIT_AUTHOR_DATE": date,
        "GIT_COMMITTER_DATE": date,
        # The repository's hooks are not the product's to run; nothing is signed.
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_0": "core.hooksPath",
        "GIT_CONFIG_VALUE_0": os.devnull,
        "GIT_CONFIG_KEY_1": "commit.gpgSign",
        "GIT_CONFIG_VALUE_1": "false",
    }
    git(["commit", "--quiet", "--no-verify", "--message", message], timeout, cwd=path, env=env)
    return git(["rev-parse", "HEAD"], timeout, cwd=path).strip()


def refuse_unsafe_branch(branch: str, *protected: str) -> None:
    """Raise `PushRefused` unless `branch` is a product branch (under `codehealth/`)
    and none of `protected` (the default branch, the PR's base)."""
    name = branch.removeprefix("refs/heads/")
    if name in {p.removeprefix("refs/heads/") for p in protected if p}:
        raise PushRefused(f"Refused to push to {name}: it is the default branch or the base.")
    if not name.startswith(BRANCH_PREFIX) or name == BRANCH_PREFIX or ".." in name:
        raise PushRefused(f"Refused to push to {name}: the product pushes only {BRANCH_PREFIX}….")


def push(path: Path, source: Source, commit: str, branch: str, base: str, timeout: float) -> None:
    """Push `commit` to the new branch `branch`, which must not exist yet."""
    refuse_unsafe_branch(branch, base, source.branch)
    ref = f"refs/heads/{branch}"
    # An empty expected value: the push fails rather than move an existing branch.
    arguments = ["push", "--quiet", f"--force-with-lease={ref}:", source.url, f"{commit}:{ref}"]
    git(arguments, timeout, cwd=path, env=source.env)


def _fixed(path: Path, timeout: float, findings: Sequence[Finding]) -> list[Change]:
    """The findings ruff no longer reports after the fixes. A finding whose line only
    changed around it (its identity moved) is not counted: per file and rule, no more
    are counted fixed than ruff reports fewer."""
    remaining = distinct(ruff_check.lint(path, timeout))
    identities = {item.identity for item in remaining}
    still = Counter((item.file, item.rule) for item in remaining)
    before = Counter((finding.file, finding.rule) for finding in findings)
    allowed = {key: count - still[key] for key, count in before.items()}
    changes = []
    for finding in sorted(findings, key=lambda f: (f.file, f.line or 0, f.rule)):
        key = (finding.file, finding.rule)
        if finding.identity in identities or allowed[key] <= 0:
            continue
        allowed[key] -= 1
        changes.append(
            Change(finding.file, finding.rule, finding.message, finding.line, finding.pk)
        )
    return changes


def _kept(keep: Collection[tuple[str, str]]) -> list[str]:
    """Ruff's inline override that ignores each kept rule in its file (on top of the
    repository's own per-file ignores) for the fix only."""
    if not keep:
        return []
    by_file: dict[str, list[str]] = {}
    for file, rule in sorted(keep):
        by_file.setdefault(glob.escape(file), []).append(rule)
    # JSON strings are TOML basic strings.
    table = ", ".join(
        f"{json.dumps(file)} = {json.dumps(rules)}" for file, rules in by_file.items()
    )
    return ["--config", f"lint.extend-per-file-ignores = {{{table}}}"]


def _configuration_arguments(path: Path) -> list[str]:
    """Ruff reads a configuration from parent directories too: a repository without
    its own gets ruff's defaults, not the product's (as the ruff check does)."""
    if ruff_check.has_own_configuration(path):
        return []
    defaults = path.parent / "default-ruff.toml"
    if not defaults.exists():
        defaults.write_text("# ruff's defaults, for repositories without a configuration\n")
    return ["--config", str(defaults)]


def _ruff(path: Path, arguments: list[str], timeout: float) -> None:
    try:
        done = subprocess.run(  # noqa: S603 (this project's ruff, an argument list)
            [ruff_check.ruff_executable(), *arguments[:1], "--no-cache", *arguments[1:]],
            cwd=path,
            capture_output=True,
            text=True,
            timeout=max(timeout, 1),
            check=False,
            env={**os.environ, "NO_COLOR": "1"},
        )
    except subprocess.TimeoutExpired as error:
        raise CheckFailed(f"ruff {arguments[0]} did not finish within {timeout:.0f} s.") from error
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        said = lines[-1] if lines else f"exit code {done.returncode}"
        raise CheckFailed(f"ruff {arguments[0]} failed: {said}")
