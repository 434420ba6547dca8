"""A clean checkout of a repository's default branch in the work directory the
product manages (`HEALTHMON_CODE_WORKDIR`): cloned shallow the first time, fetched
and reset after. The source repository is only ever read.

A local repository is read from its path; a GitHub one from the clone URL GitHub's
API gives for it, with the integration's token sent as an HTTP header through git's
environment (never on a command line or in the checkout's configuration).
"""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Mapping
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


@dataclass(frozen=True)
class Source:
    """Where a repository is fetched from, and the environment git needs for it."""

    url: str
    branch: str
    env: Mapping[str, str]


def checkout_path(repository: Repository) -> Path:
    return Path(settings.HEALTHMON_CODE_WORKDIR) / f"{repository.pk}-{repository.name}"


def cache_path(repository: Repository) -> Path:
    """What the checks keep between scans of `repository`, beside its checkout (so a
    clean of the checkout leaves it)."""
    return Path(settings.HEALTHMON_CODE_WORKDIR) / f"{repository.pk}-{repository.name}.cache"


def source_of(repository: Repository, timeout: float) -> Source:
    if repository.kind == Repository.Kind.GITHUB:
        return _github_source(repository)
    source = Path(repository.path).expanduser()
    if not repository.path or not source.is_dir():
        raise CheckFailed(f"{repository.path or '(no path)'} is not a directory on this machine.")
    url = source.resolve().as_uri()
    return Source(url, repository.default_branch or _head_branch(url, timeout), {})


def checkout(repository: Repository, timeout: float) -> Checkout:
    source = source_of(repository, timeout)
    url, branch, env = source.url, source.branch, source.env
    target = checkout_path(repository)
    if (target / ".git").is_dir():
        _git(["remote", "set-url", "origin", url], timeout, cwd=target)
        _git(["fetch", "--depth", "1", "origin", branch], timeout, cwd=target, env=env)
        _git(["reset", "--hard", "FETCH_HEAD"], timeout, cwd=target)
        _git(["clean", "-fdx"], timeout, cwd=target)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        _git(
            ["clone", "--quiet", "--depth", "1", "--branch", branch, url, str(target)],
            timeout,
            env=env,
        )
    commit = _git(["rev-parse", "HEAD"], timeout, cwd=target).strip()
    return Checkout(path=target, branch=branch, commit=commit)


def tracked_files(path: Path, timeout: float) -> dict[str, str]:
    """Every file of the checkout's commit and its git blob id (the same content has
    the same id in every commit, so a check's per-file results can be kept by it)."""
    listing = _git(["ls-tree", "-r", "-z", "HEAD"], timeout, cwd=path)
    files = {}
    for entry in listing.split("\0"):
        meta, _, name = entry.partition("\t")
        parts = meta.split()
        if name and len(parts) == 3 and parts[1] == "blob":
            files[name] = parts[2]
    return files


def _github_source(repository: Repository) -> Source:
    from controlplane.github import GitHubError, GitHubNotFound
    from controlplane.github_integration import client_for

    if repository.integration is None or not repository.full_name:
        raise CheckFailed("A GitHub repository needs its integration and its owner/name.")
    if not repository.integration.enabled:
        raise CheckFailed(f"The integration {repository.integration} is disabled.")
    try:
        with client_for(repository.integration) as client:
            answer = client.get(f"/repos/{repository.full_name}")
            token = client.access_token()
    except GitHubNotFound as error:
        raise CheckFailed(
            f"GitHub has no repository {repository.full_name}, or the integration "
            f"{repository.integration} cannot see it (give its token or App access to it)."
        ) from error
    except GitHubError as error:
        raise CheckFailed(str(error)) from error
    url = answer.get("clone_url") if isinstance(answer, dict) else None
    if not isinstance(url, str) or not url:
        raise CheckFailed(f"GitHub gave no clone URL for {repository.full_name}.")
    branch = repository.default_branch or str(answer.get("default_branch") or "")
    if not branch:
        raise CheckFailed(f"GitHub names no default branch for {repository.full_name}.")
    return Source(url, branch, _auth_env(token))


def _auth_env(token: str) -> dict[str, str]:
    """git sends the token as GitHub documents for HTTPS (user x-access-token), from
    its environment: nothing on a command line others may list, nothing stored. No
    credential helper is asked: a refused token must fail the scan, not fall back on
    whatever credentials the machine's user keeps."""
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return {
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_0": "http.extraHeader",
        "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
        "GIT_CONFIG_KEY_1": "credential.helper",
        "GIT_CONFIG_VALUE_1": "",
    }


def _head_branch(url: str, timeout: float) -> str:
    for line in _git(["ls-remote", "--symref", url, "HEAD"], timeout).splitlines():
        if line.startswith("ref: refs/heads/") and line.endswith("\tHEAD"):
            return line.removeprefix("ref: refs/heads/").removesuffix("\tHEAD")
    raise CheckFailed(f"{url} has no commits on its HEAD branch; name a default branch.")


def _git(
    arguments: list[str],
    timeout: float,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    # No prompt for credentials, no user hooks or templates: the checkout is the
    # product's own and must behave the same for every scan.
    env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "LC_ALL": "C",
        **(env or {}),
    }
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


# The same runner for the pull-request flow's own clones (healthmon.code_autofix).
git = _git


def _reason(stderr: str) -> str:
    if "could not read Username" in stderr or "Authentication failed" in stderr:
        # git asks for a password when the server refuses its header (HTTP 401).
        return (
            "the server refused the credentials (HTTP 401): the token was revoked or "
            "cannot read this repository's contents"
        )
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    # A refused push: its "! [remote rejected] ... (why)" line, and what the remote said.
    refused = [line for line in lines if line.startswith("! [")]
    if refused:
        said = [
            line.removeprefix("remote:").strip() for line in lines if line.startswith("remote:")
        ]
        return "; ".join([*refused, *filter(None, said)])
    fatal = [line.removeprefix("fatal: ") for line in lines if line.startswith("fatal:")]
    return (fatal or lines[-1:] or [""])[0]
