"""Small git repositories for the code scan tests, made with `git init` in tmp_path."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

UNUSED_IMPORT = "import os\n\n\ndef main():\n    return 1\n"
CLEAN = "def main():\n    return 1\n"


def git(repo: Path, *arguments: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *arguments],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout.strip()


def commit(repo: Path, files: dict[str, str], message: str = "change") -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def make_repository(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    commit(path, files, "first")
    return path


# A Python and npm project for the dependency audit: httpx and attrs declared and
# locked, left-pad and htmx.org in package.json and its lock.
SHOP_PYPROJECT = """[project]
name = "shop"
version = "1.0"
dependencies = ["httpx>=0.27", "attrs==24.1.0", "jinja2"]
"""
SHOP_CODE = "import attrs\nimport httpx\nimport jinja2\n\n\ndef main():\n    return 1\n"


def uv_lock(**versions: str) -> str:
    """A uv.lock of the project "shop" and packages from the registry at `versions`."""
    entries = ['[[package]]\nname = "shop"\nversion = "1.0"\nsource = { virtual = "." }\n']
    for name, version in versions.items():
        entries.append(
            f'[[package]]\nname = "{name}"\nversion = "{version}"\n'
            'source = { registry = "https://pypi.org/simple" }\n'
        )
    return 'version = 1\nrequires-python = ">=3.12"\n\n' + "\n".join(entries)


def npm_project(**declared: str) -> str:
    return json.dumps({"name": "shop-web", "version": "1.0.0", "dependencies": declared}, indent=2)


def npm_lock(**versions: str) -> str:
    packages: dict[str, object] = {"": {"name": "shop-web", "version": "1.0.0"}}
    for name, version in versions.items():
        packages[f"node_modules/{name}"] = {"version": version}
    return json.dumps({"name": "shop-web", "lockfileVersion": 3, "packages": packages}, indent=2)


def shop(**changes: str) -> dict[str, str]:
    """The files of the audit's fixture project, with `changes` by file name."""
    files = {
        "pyproject.toml": SHOP_PYPROJECT,
        "uv.lock": uv_lock(attrs="24.1.0", httpx="0.27.0", jinja2="3.1.4"),
        "shop.py": SHOP_CODE,
        "package.json": npm_project(**{"left-pad": "^1.1.0", "htmx.org": "2.0.4"}),
        "package-lock.json": npm_lock(**{"left-pad": "1.1.3", "htmx.org": "2.0.4"}),
    }
    return {**files, **changes}
