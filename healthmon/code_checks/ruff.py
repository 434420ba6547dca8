"""Static analysis with ruff, on the checkout, with the repository's own ruff
configuration when it has one (ruff finds pyproject.toml / ruff.toml itself).

Severity by rule family, most serious first:
- high: syntax errors and the pyflakes rules for code that fails when it runs
  (undefined names F821-F823, F63x comparisons and asserts that are always true or
  wrong, F7xx statements outside their place), and bandit's security rules (S);
- medium: the other pyflakes rules (unused imports and variables, redefinitions),
  bugbear (B) and pylint errors (PLE);
- low: style and everything else (pycodestyle, isort, pyupgrade, naming, docs...).

Incremental: when the last successful scan's results are in the cache and no ruff
configuration changed, only the Python files that changed are checked again; the
other files keep what ruff said of them then.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from healthmon.code_checks import (
    CheckFailed,
    Reported,
    ScanContext,
    as_json,
    distinct,
    from_json,
    identity_of,
)
from healthmon.models import Finding

NAME = "ruff"
CONFIGURATION_FILES = ("pyproject.toml", "ruff.toml", ".ruff.toml")
PYTHON_SUFFIXES = (".py", ".pyi")
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


def run(context: ScanContext) -> list[Reported]:
    python = [name for name in context.files if name.endswith(PYTHON_SUFFIXES)]
    by_file = _previous_results(context)
    if by_file is None:
        by_file = {}
        found = lint(context.path, context.remaining())
    else:
        again = [name for name in python if name in (context.changed or ())]
        by_file = {name: items for name, items in by_file.items() if name in context.files}
        for name in again:
            by_file.pop(name, None)
        found = lint(context.path, context.remaining(), again) if again else []
    for item in found:
        by_file.setdefault(item.file, []).append(item)
    context.store(f"results-{context.commit}", {n: as_json(i) for n, i in by_file.items()})
    context.state["commit"] = context.commit
    context.progress(len(python), len(python))
    return distinct([item for name in sorted(by_file) for item in by_file[name]])


def _previous_results(context: ScanContext) -> dict[str, list[Reported]] | None:
    """What ruff said of each file at the last successful scan, when it still holds
    (no configuration changed); None for a full run."""
    if context.changed is None or any(
        Path(name).name in CONFIGURATION_FILES for name in context.changed
    ):
        return None
    stored = context.cached(f"results-{context.previous_state.get('commit')}")
    if not isinstance(stored, dict):
        return None
    try:
        return {name: from_json(items) for name, items in stored.items()}
    except TypeError:
        return None


def lint(checkout: Path, timeout: float, files: list[str] | None = None) -> list[Reported]:
    """Ruff's problems in `files` of the checkout (all of it without them)."""
    checkout = checkout.resolve()
    command = [ruff_executable(), "check", "--output-format", "json", "--no-cache", "--exit-zero"]
    command.append("--force-exclude")  # the configuration's excludes hold for named files
    if not has_own_configuration(checkout):
        # Ruff looks for a configuration in the parent directories too: a checkout in
        # a work directory under this project would be checked with the product's
        # own rules. A repository without one gets ruff's defaults instead.
        command += ["--config", str(_defaults(checkout.parent))]
    try:
        done = subprocess.run(  # noqa: S603 (this project's ruff, an argument list)
            [*command, "--", *(files or ["."])],
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
    return [reported(checkout, item) for item in diagnostics]


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
