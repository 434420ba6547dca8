"""Git's smart HTTP for the fake GitHub (`tests.github_server`): requests answered by
git's own `git http-backend`, run as a CGI on a bare repository, and the credentials
git sends as GitHub asks for them (HTTP Basic, user `x-access-token`)."""

from __future__ import annotations

import base64
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

# /owner/name.git/info/refs?service=... , /owner/name.git/git-upload-pack ...
GIT_PATH = re.compile(r"^/(?P<owner>[^/]+)/(?P<name>[^/]+?)\.git(?P<rest>/.*)$")
PUSH_SERVICE = "git-receive-pack"


@dataclass(frozen=True)
class GitRequest:
    method: str
    path: str  # after the repository's URL: /info/refs, /git-upload-pack...
    repository: str
    service: str  # git-upload-pack (clone, fetch) or git-receive-pack (push)
    token: str  # the token it carried, "" for none
    status: int


def basic_token(authorization: str) -> str:
    """The token of `Basic base64(x-access-token:TOKEN)`, "" for anything else."""
    if not authorization.startswith("Basic "):
        return ""
    try:
        user, _, token = base64.b64decode(authorization[6:]).decode().partition(":")
    except ValueError:
        return ""
    return token if user == "x-access-token" else ""


def http_backend(
    bare: Path, rest: str, query: str, method: str, headers: dict[str, str], body: bytes
) -> tuple[int, bytes | str, dict[str, str]]:
    """`git http-backend` (a CGI) on `bare`: the status, body and headers it answers."""
    environment = {
        "GIT_PROJECT_ROOT": str(bare.parent),
        "GIT_HTTP_EXPORT_ALL": "1",
        "GIT_CONFIG_NOSYSTEM": "1",
        "PATH_INFO": f"/{bare.name}{rest}",
        "QUERY_STRING": query,
        "REQUEST_METHOD": method,
        "CONTENT_TYPE": headers.get("content-type", ""),
        "CONTENT_LENGTH": str(len(body)),
        "REMOTE_USER": "x-access-token",  # http-backend lets only a known user push
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_CONTENT_ENCODING": headers.get("content-encoding", ""),
        "HTTP_GIT_PROTOCOL": headers.get("git-protocol", ""),
        "PATH": "/usr/bin:/bin:/usr/local/bin",
    }
    done = subprocess.run(
        ["git", "http-backend"],
        input=body,
        capture_output=True,
        env=environment,
        timeout=60,
        check=False,
    )
    head, blank, content = done.stdout.partition(b"\r\n\r\n")
    if not blank:
        head, blank, content = done.stdout.partition(b"\n\n")
    status, cgi_headers = 200, {}
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.split()[0])
        elif name:
            cgi_headers[name] = value.strip()
    if done.returncode != 0 and not done.stdout:
        return 500, done.stderr.decode(errors="replace"), {}
    return status, content, cgi_headers
