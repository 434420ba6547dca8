"""The checks a code scan runs, one module each, and what they report.

A check reads a checkout and returns `Reported` problems; `code_scans` turns them
into findings. Each problem carries an identity that does not depend on its line
number: the check, the rule, the file, the offending line's text with its spacing
normalised and the name of the definition around it. A problem whose lines moved
(code inserted above it) keeps its identity and stays the same finding.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

_SPACES = re.compile(r"\s+")
_DEFINITION = re.compile(r"^(\s*)(?:async\s+def|def|class)\s+([A-Za-z_][A-Za-z0-9_]*)")


class CheckFailed(Exception):
    """The tool could not run or crashed: the scan fails with this reason."""


@dataclass(frozen=True)
class Reported:
    check: str
    rule: str
    severity: int
    message: str
    file: str
    line: int | None
    identity: str


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
