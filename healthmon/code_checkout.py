"""A clean checkout of a repository's default branch in the work directory the
product manages (`HEALTHMON_CODE_WORKDIR`): cloned shallow the first time, fetched
and reset after. The source repository is only ever read."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from healthmon.code_checks import CheckFailed
from healthmon.models import Repository


@dataclass(frozen=True)
class Checkout:
    path: Path
    branch: str
    commit: str


def checkout(repository: Repository, timeout: float) -> Checkout:
    if repository.kind != Repository.Kind.LOCAL:
        raise CheckFailed(
            f"Scanning {repository.get_kind_display()} repositories is not built yet."
        )
    source = Path(repository.path).expanduser()
    if not repository.path or not source.is_dir():
        raise CheckFailed(f"{repository.path or '(no path)'} is not a directory on this machine.")
    url = source.resolve().as_uri()
    branch = repository.default_branch or _head_branch(url, timeout)
    target = Path(settings.HEALTHMON_CODE_WORKDIR) / f"{repository.pk}-{repository.name}"
    if (target / ".git").is_dir():
        _git(["remote", "set-url", "origin", url], timeout, cwd=target)
        _git(["fetch", "--depth", "1", "origin", branch], timeout, cwd=target)
        _git(["reset", "--hard", "FETCH_HEAD"], timeout, cwd=target)
        _git(["clean", "-fdx"], timeout, cwd=target)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        _git(["clone", "--quiet", "--depth", "1", "--branch", branch, url, str(target)], timeout)
    commit = _git(["rev-parse", "HEAD"], timeout, cwd=target).strip()
    return Checkout(path=target, branch=branch, commit=commit)


def _head_branch(url: str, timeout: float) -> str:
    for line in _git(["ls-remote", "--symref", url, "HEAD"], timeout).splitlines():
        if line.startswith("ref: refs/heads/") and line.endswith("\tHEAD"):
            return line.removeprefix("ref: refs/heads/").removesuffix("\tHEAD")
    raise CheckFailed(f"{url} has no commits on its HEAD branch; name a default branch.")


def _git(arguments: list[str], timeout: float, *, cwd: Path | None = None) -> str:
    # No prompt for credentials, no user hooks or templates: the checkout is the
    # product's own and must behave the same for every scan.
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"}
    try:
        done = subprocess.run(  # noqa: S603 (an argument list, no shell)
            ["git", *arguments],  # noqa: S607 (the git on PATH, as an operator runs it)
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=max(timeout, 1),
            check=False,
            env=env,
        )
    except subprocess.TimeoutExpired as error:
        raise CheckFailed(f"git {arguments[0]} did not finish within {timeout:.0f} s.") from error
    except OSError as error:
        raise CheckFailed(f"git could not run: {error}") from error
    if done.returncode != 0:
        # git's first "fatal:" line says why ("does not appear to be a git repository",
        # "Remote branch x not found"); the lines after it are generic advice.
        said = _reason(done.stderr) or f"exit code {done.returncode}"
        raise CheckFailed(f"git {arguments[0]} failed: {said}")
    return done.stdout


def _reason(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    fatal = [line.removeprefix("fatal: ") for line in lines if line.startswith("fatal:")]
    return (fatal or lines[-1:] or [""])[0]
