"""Static analysis with ruff, on the checkout, with the repository's own ruff
configuration when it has one (ruff finds pyproject.toml / ruff.toml itself).

Severity by rule family, most serious first:
- high: syntax errors and the pyflakes rules for code that fails when it runs
  (undefined names F821-F823, F63x comparisons and asserts that are always true or
  wrong, F7xx statements outside their place), and bandit's security rules (S);
- medium: the other pyflakes rules (unused imports and variables, redefinitions),
  bugbear (B) and pylint errors (PLE);
- low: style and everything else (pycodestyle, isort, pyupgrade, naming, docs...).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from healthmon.code_checks import CheckFailed, Reported, distinct, identity_of
from healthmon.models import Finding

NAME = "ruff"
_HIGH_PREFIXES = ("F821", "F822", "F823", "F63", "F7", "E9", "S")
_MEDIUM_PREFIXES = ("F", "B", "PLE")


def ruff_executable() -> str:
    """This project's ruff: the one beside the running Python, else on PATH."""
    beside = Path(sys.executable).with_name("ruff")
    if beside.exists():
        return str(beside)
    found = shutil.which("ruff")
    if found is None:
        raise CheckFailed("ruff is not installed (not beside this Python, not on PATH).")
    return found


def severity_of(rule: str) -> int:
    if rule == "syntax-error" or rule.startswith(_HIGH_PREFIXES):
        return Finding.Severity.HIGH
    if rule.startswith(_MEDIUM_PREFIXES):
        return Finding.Severity.MEDIUM
    return Finding.Severity.LOW


def run(checkout: Path, timeout: float) -> list[Reported]:
    checkout = checkout.resolve()
    command = [ruff_executable(), "check", "--output-format", "json", "--no-cache", "--exit-zero"]
    if not has_own_configuration(checkout):
        # Ruff looks for a configuration in the parent directories too: a checkout in
        # a work directory under this project would be checked with the product's
        # own rules. A repository without one gets ruff's defaults instead.
        command += ["--config", str(_defaults(checkout.parent))]
    try:
        done = subprocess.run(  # noqa: S603 (this project's ruff, an argument list)
            [*command, "."],
            cwd=checkout,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "NO_COLOR": "1"},
        )
    except subprocess.TimeoutExpired as error:
        raise CheckFailed(f"ruff did not finish within {timeout:.0f} s.") from error
    if done.returncode != 0:
        # --exit-zero: any other code is ruff failing (a bad configuration, a crash).
        raise CheckFailed("ruff failed: " + _reason(done.stderr, done.returncode))
    try:
        diagnostics = json.loads(done.stdout or "[]")
    except json.JSONDecodeError as error:
        raise CheckFailed(f"ruff printed something that is not JSON: {error}") from error
    return distinct([reported(checkout, item) for item in diagnostics])


def reported(checkout: Path, item: dict[str, object]) -> Reported:
    rule = str(item.get("code") or "syntax-error")
    path = Path(str(item.get("filename", "")))
    file = path.relative_to(checkout) if path.is_absolute() else path
    first = _row(item.get("location"))
    last = _row(item.get("end_location")) or first
    lines = _lines(checkout / file)
    return Reported(
        check=NAME,
        rule=rule,
        severity=severity_of(rule),
        message=str(item.get("message", "")),
        file=file.as_posix(),
        line=first or None,
        identity=identity_of(NAME, rule, file.as_posix(), lines, first, last),
    )


def _reason(stderr: str, returncode: int) -> str:
    """Ruff's "Cause:" lines and its last line (the TOML excerpt between is left out)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    causes = [line.removeprefix("Cause: ") for line in lines if line.startswith("Cause:")]
    if lines and not lines[-1].startswith(("Cause:", "|")):
        causes.append(lines[-1])
    return "; ".join(causes) or (lines[-1] if lines else f"exit code {returncode}")


def has_own_configuration(checkout: Path) -> bool:
    if (checkout / "ruff.toml").is_file() or (checkout / ".ruff.toml").is_file():
        return True
    try:
        pyproject = tomllib.loads((checkout / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    tool = pyproject.get("tool")
    return isinstance(tool, dict) and "ruff" in tool


def _defaults(workdir: Path) -> Path:
    """An empty ruff.toml (ruff's defaults) beside the checkouts."""
    path = workdir / "default-ruff.toml"
    if not path.exists():
        path.write_text("# ruff's defaults, for repositories without a configuration\n")
    return path


def _row(location: object) -> int:
    if isinstance(location, dict):
        return int(location.get("row") or 0)
    return 0


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
