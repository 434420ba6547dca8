"""The checks a code scan runs, one module each, and what they report.

A check reads a checkout and returns `Reported` problems; `code_scans` turns them
into findings. Each problem carries an identity that does not depend on its line
number: the check, the rule, the file, the offending line's text with its spacing
normalised and the name of the definition around it. A problem whose lines moved
(code inserted above it) keeps its identity and stays the same finding.

Every check is a module with a `NAME` and a `run(context: ScanContext)` returning
its `Reported` problems; `code_scans.CHECKS` lists them in the order they run. The
context tells a check which files the scan's commit holds (path -> git blob id) and
which changed since the last successful scan, so that a check can redo only the work
those files need: its `cache` directory keeps what it computed per blob across scans,
`previous_state` is what it stored with the last successful scan and `state` what it
stores with this one (small JSON: a contract's last shape, not per-file results).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controlplane.background import stopping

if TYPE_CHECKING:
    from healthmon.models import Repository

_SPACES = re.compile(r"\s+")
_DEFINITION = re.compile(r"^(\s*)(?:async\s+def|def|class)\s+([A-Za-z_][A-Za-z0-9_]*)")


class CheckFailed(Exception):
    """The tool could not run or crashed: the scan fails with this reason."""


class ScanInterrupted(Exception):
    """The process running the scan is stopping (`controlplane.background.stopping`):
    the scan ends here, not by any check's fault, and runs again at the next scan."""


def stop_if_stopping() -> None:
    """Raise `ScanInterrupted` once the process running the scan is stopping."""
    if stopping():
        raise ScanInterrupted("The process running the scan is stopping.")


@dataclass(frozen=True)
class Reported:
    check: str
    rule: str
    severity: int
    message: str
    file: str
    line: int | None
    identity: str


@dataclass
class ScanContext:
    """What one check of one scan works with."""

    repository: Repository
    path: Path  # the checkout
    commit: str
    files: dict[str, str]  # every tracked file -> its git blob id
    # Files added, changed or removed since the last successful scan; None when there
    # was none (or it recorded no files): a full scan.
    changed: frozenset[str] | None
    cache: Path  # this check's own directory, kept across scans
    previous_state: dict[str, Any]
    deadline: float  # time.monotonic() by which the scan must end
    report_progress: Callable[[int, int], None] = lambda done, total: None
    state: dict[str, Any] = field(default_factory=dict)

    def remaining(self) -> float:
        """Seconds left before the scan's time limit; raises `CheckFailed` past it, and
        `ScanInterrupted` once the process is stopping."""
        stop_if_stopping()
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise CheckFailed("The scan ran past its time limit.")
        return left

    def progress(self, done: int, total: int) -> None:
        """`done` of `total` units (files, packages) of this check are done."""
        self.report_progress(done, total)

    def unchanged(self, *paths: str) -> bool:
        """True when none of `paths` (files of the checkout) changed since the last
        successful scan: what the check derived from them then still holds."""
        return self.changed is not None and not any(path in self.changed for path in paths)

    def cached(self, key: str) -> Any:
        """What `store(key, ...)` kept, or None."""
        try:
            return json.loads((self.cache / f"{key}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def store(self, key: str, value: Any) -> None:
        """Keep `value` (JSON) under `key`, written whole (a crash leaves no half file)."""
        self.cache.mkdir(parents=True, exist_ok=True)
        draft = self.cache / f".{key}.tmp"
        draft.write_text(json.dumps(value), encoding="utf-8")
        draft.replace(self.cache / f"{key}.json")


def as_json(reported: Sequence[Reported]) -> list[dict[str, Any]]:
    """Problems as JSON, for a check's cache."""
    return [item.__dict__ for item in reported]


def from_json(items: Any) -> list[Reported]:
    return [Reported(**item) for item in items]


def normalised(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def enclosing_definition(lines: Sequence[str], index: int) -> str:
    """The dotted name of the defs and classes around line `index` (0-based), ''
    at module level; read from indentation, so it works on any Python file."""
    names: list[str] = []
    target = lines[index] if 0 <= index < len(lines) else ""
    limit = len(target) - len(target.lstrip())
    for line in reversed(lines[:index]):
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent >= limit:
            continue
        match = _DEFINITION.match(line)
        if match:
            names.append(match.group(2))
        limit = indent
        if indent == 0:
            break
    return ".".join(reversed(names))


def identity_of(
    check: str, rule: str, file: str, lines: Sequence[str], first: int, last: int
) -> str:
    """The stable identity of a problem on lines `first`..`last` (1-based) of `file`."""
    text = " ".join(normalised(line) for line in lines[max(first - 1, 0) : max(last, first)])
    where = enclosing_definition(lines, first - 1)
    key = "\x1f".join([check, rule, file, where, text])
    return hashlib.sha256(key.encode()).hexdigest()


def distinct(reported: list[Reported]) -> list[Reported]:
    """Same identity twice in one scan (one line with the same problem twice, two
    identical lines in one function): the later ones are told apart by their order,
    which survives lines moving as long as they keep their order."""
    seen: dict[str, int] = {}
    result = []
    for item in reported:
        count = seen.get(item.identity, 0)
        seen[item.identity] = count + 1
        if count:
            again = hashlib.sha256(f"{item.identity}#{count}".encode()).hexdigest()
            item = Reported(**{**item.__dict__, "identity": again})
        result.append(item)
    return result
