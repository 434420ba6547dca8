"""Unused, missing and transitive-only Python dependencies, by deptry, run on the
checkout with the repository's own configuration ([tool.deptry] in its pyproject).

deptry compares what the code imports with what the manifests declare, so its
answer can change only when a manifest changes or when the set of modules some file
imports does. Each Python file's top-level imports are kept in the cache by git blob
id; when the manifests, the list of Python files and every file's imports are what
they were at the last run, deptry's last answer still holds and it is not run again
(only the line of an import in a changed file is looked up anew).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from healthmon.code_checks import CheckFailed, ScanContext
from healthmon.code_checks.dependencies.manifests import is_manifest

IMPORTS_KEY = "imports-by-blob"
RESULTS_KEY = "deptry-results"
PYTHON_SUFFIXES = (".py", ".pyi", ".ipynb")


def deptry_executable() -> str:
    beside = Path(sys.executable).with_name("deptry")
    if beside.exists():
        return str(beside)
    found = shutil.which("deptry")
    if found is None:
        raise CheckFailed("deptry is not installed (not beside this Python, not on PATH).")
    return found


def has_specification(checkout: Path) -> bool:
    """deptry has dependencies to compare with: a pyproject with a [project], Poetry
    or PDM table, or a requirements.txt (without one, it stops with an error)."""
    if (checkout / "requirements.txt").is_file():
        return True
    try:
        document = tomllib.loads((checkout / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    tool = document.get("tool", {})
    return "project" in document or "pdm" in tool or "dependencies" in tool.get("poetry", {})


def issues(context: ScanContext) -> list[dict[str, Any]]:
    """deptry's issues: each {"code", "module", "message", "file", "line"}."""
    if not has_specification(context.path):
        return []
    imports = _imports_by_file(context)
    key = _input_key(context, imports)
    previous = context.cached(RESULTS_KEY)
    if isinstance(previous, dict) and previous.get("key") == key:
        found = previous.get("issues", [])
        for issue in found:
            where = imports.get(issue["file"], {})
            issue["line"] = where.get(issue["module"], issue["line"])
        return list(found)
    found = run_deptry(context.path, context.remaining())
    context.store(RESULTS_KEY, {"key": key, "issues": found})
    return found


def run_deptry(checkout: Path, timeout: float) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="deptry-") as folder:
        output = Path(folder) / "deptry.json"
        try:
            done = subprocess.run(  # noqa: S603 (this project's deptry, an argument list)
                [deptry_executable(), ".", "--no-ansi", "--json-output", str(output)],
                cwd=checkout.resolve(),
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                env={**os.environ, "NO_COLOR": "1"},
            )
        except subprocess.TimeoutExpired as error:
            raise CheckFailed(f"deptry did not finish within {timeout:.0f} s.") from error
        try:
            # deptry exits 1 when it finds issues: its JSON file tells an answer from a crash.
            found = json.loads(output.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise CheckFailed("deptry failed: " + _reason(done.stderr, done.returncode)) from None
    if not isinstance(found, list):
        raise CheckFailed("deptry wrote something that is not a list of issues.")
    return [_issue(item) for item in found if isinstance(item, dict)]


def _issue(item: dict[str, Any]) -> dict[str, Any]:
    error, location = item.get("error") or {}, item.get("location") or {}
    return {
        "code": str(error.get("code", "DEP000")),
        "message": str(error.get("message", "")),
        "module": str(item.get("module", "")),
        "file": str(location.get("file") or ""),
        "line": location.get("line"),
    }


def _reason(stderr: str, returncode: int) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {returncode}"


def _imports_by_file(context: ScanContext) -> dict[str, dict[str, int]]:
    """Each Python file -> {top-level module it imports: first line}, from the cache
    by blob id, parsing only files not seen before."""
    stored = context.cached(IMPORTS_KEY)
    known: dict[str, dict[str, int]] = stored if isinstance(stored, dict) else {}
    result: dict[str, dict[str, int]] = {}
    kept: dict[str, dict[str, int]] = {}
    for name, blob in context.files.items():
        if not name.endswith(PYTHON_SUFFIXES):
            continue
        if blob not in known:
            known[blob] = _imports_of(context.path / name)
        result[name] = kept[blob] = known[blob]
    if not isinstance(stored, dict) or kept.keys() != stored.keys():
        context.store(IMPORTS_KEY, kept)
    return result


_IMPORT = re.compile(rb"^[ \t]*import[ \t]+([^\n#;]+)", re.M)
_FROM = re.compile(rb"^[ \t]*from[ \t]+(\w[\w.]*)[ \t]+import\b", re.M)


def _imports_of(path: Path) -> dict[str, int]:
    """The top-level modules a file imports, read from its import statements' first
    lines: far cheaper than parsing, and an import-looking line inside a string only
    makes deptry run once more than it needs."""
    try:
        source = path.read_bytes()
    except OSError:
        return {}
    if path.suffix == ".ipynb":
        # A notebook's imports are in JSON cells: its content stands for them.
        return {"#notebook " + hashlib.sha256(source).hexdigest(): 0}
    found: dict[str, int] = {}
    for pattern in (_IMPORT, _FROM):
        for match in pattern.finditer(source):
            line = source.count(b"\n", 0, match.start()) + 1
            for name in match.group(1).split(b","):
                top = name.strip().split(b" ", 1)[0].split(b".", 1)[0].decode()
                if top and (top not in found or line < found[top]):
                    found[top] = line
    return found


def _input_key(context: ScanContext, imports: dict[str, dict[str, int]]) -> str:
    """What deptry's answer depends on: the manifests (wherever they are: a
    configuration may name requirements files anywhere), every Python file's path and
    the modules it imports."""
    parts = [f"{name}={blob}" for name, blob in sorted(context.files.items()) if is_manifest(name)]
    parts += [f"{name}:{','.join(sorted(modules))}" for name, modules in sorted(imports.items())]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()
