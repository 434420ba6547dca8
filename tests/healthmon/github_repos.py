"""GitHub repositories for the code scan tests: a fake GitHub serving a bare copy of
a small git repository over HTTP, and integrations (a token, an App) to read it."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from controlplane.models import Integration
from healthmon.models import Repository
from tests.github_server import GitHubServer
from tests.healthmon.code_repos import git

TOKEN = "github_pat_11SCANS0secretpart9876543210zyxw"
FULL_NAME = "octo-org/backend"
APP_ID = "4242"
INSTALLATION_ID = "77"


def serve(github: GitHubServer, source: Path, full_name: str = FULL_NAME) -> Path:
    """A bare copy of `source`, served by `github` as `full_name`; the bare path."""
    bare = source.parent / f"{source.name}.git"
    git(source.parent, "clone", "-q", "--bare", str(source), str(bare))
    github.add_repository(full_name, bare=bare)
    return bare


def push(github: GitHubServer, work: Path, token: str = TOKEN, full_name: str = FULL_NAME) -> None:
    """Push `work`'s main branch to GitHub as a developer would, over HTTP."""
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    subprocess.run(
        ["git", "push", "-q", github.clone_url(full_name), "HEAD:refs/heads/main"],
        cwd=work,
        env={
            **os.environ,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {basic}",
        },
        capture_output=True,
        check=True,
        timeout=60,
    )


def token_integration(github: GitHubServer, token: str = TOKEN) -> Integration:
    integration = Integration(kind=Integration.Kind.GITHUB, name="github-token")
    integration.set_secrets({"token": token})
    integration.settings = {"auth_method": "token", "api_url": github.url}
    integration.save()
    return integration


def app_integration(github: GitHubServer, key: RSAPrivateKey) -> Integration:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    integration = Integration(kind=Integration.Kind.GITHUB, name="github-app")
    integration.set_secrets({"private_key": pem})
    integration.settings = {
        "auth_method": "app",
        "api_url": github.url,
        "app_id": APP_ID,
        "installation_id": INSTALLATION_ID,
    }
    integration.save()
    return integration


def github_repository(
    integration: Integration, full_name: str = FULL_NAME, name: str = "backend"
) -> Repository:
    return Repository.objects.create(
        name=name, kind=Repository.Kind.GITHUB, integration=integration, full_name=full_name
    )
