"""GitHub's pull-request endpoints on the fake GitHub server, for one repository whose
git side is a local bare repository (its `clone_url` is the bare repository's file://
URL, which git clones from and pushes to).

    pulls = FakePulls(github, "octo-org/app", bare)
    ...
    pulls.created  # the POST bodies, in order
    pulls.merge(1)  # the PR is merged on "GitHub"

Like GitHub, opening a pull request needs the head branch to exist in the repository
(422 otherwise) and valid credentials (401).
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.github_server import Answer, GitHubServer, Received

REPO_PATH = r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)"


class FakePulls:
    def __init__(self, github: GitHubServer, full_name: str, bare: Path) -> None:
        self.github = github
        self.full_name = full_name
        self.bare = bare
        self.pulls: dict[int, dict[str, Any]] = {}
        self.created: list[dict[str, Any]] = []
        # An answer for the next POST instead of opening the pull request.
        self.refuse_next: Answer | None = None
        github.add_repository(full_name, clone_url=bare.as_uri(), default_branch="main")
        github.route("POST", f"{REPO_PATH}/pulls", self._create)
        github.route("GET", rf"{REPO_PATH}/pulls/(?P<number>\d+)", self._get)

    def merge(self, number: int) -> None:
        now = _now()
        self.pulls[number].update(state="closed", merged=True, merged_at=now, closed_at=now)

    def close(self, number: int) -> None:
        self.pulls[number].update(state="closed", closed_at=_now())

    def _create(self, received: Received, groups: dict[str, str]) -> Answer:
        if self.github.caller(received) is None:
            return Answer(401, {"message": "Bad credentials"})
        if f"{groups['owner']}/{groups['name']}" != self.full_name:
            return Answer(404, {"message": "Not Found"})
        if self.refuse_next is not None:
            answer, self.refuse_next = self.refuse_next, None
            return answer
        body = received.body if isinstance(received.body, dict) else {}
        self.created.append(body)
        head, base = str(body.get("head") or ""), str(body.get("base") or "")
        if not body.get("title") or not _branch_exists(self.bare, base):
            return Answer(422, {"message": "Validation Failed"})
        if not _branch_exists(self.bare, head):
            return Answer(
                422,
                {
                    "message": "Validation Failed",
                    "errors": [{"resource": "PullRequest", "field": "head", "code": "invalid"}],
                },
            )
        number = len(self.pulls) + 1
        self.pulls[number] = {
            "number": number,
            "html_url": f"https://github.example/{self.full_name}/pull/{number}",
            "state": "open",
            "title": body["title"],
            "body": body.get("body") or "",
            "head": {"ref": head},
            "base": {"ref": base},
            "merged": False,
            "merged_at": None,
            "closed_at": None,
        }
        return Answer(201, self.pulls[number])

    def _get(self, received: Received, groups: dict[str, str]) -> Answer:
        if self.github.caller(received) is None:
            return Answer(401, {"message": "Bad credentials"})
        pull = self.pulls.get(int(groups["number"]))
        return Answer(200, pull) if pull else Answer(404, {"message": "Not Found"})


def _branch_exists(bare: Path, branch: str) -> bool:
    done = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
        cwd=bare,
        capture_output=True,
        check=False,
        timeout=30,
    )
    return done.returncode == 0


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
