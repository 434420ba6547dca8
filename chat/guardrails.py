"""Guardrails: what stops a run that is going nowhere, before its budgets run out.

- **Failure fingerprints**: an error's text with its variable parts (quoted strings,
  uuids, hex and ids, paths, numbers) replaced by placeholders, then hashed, so
  "timeout after 3012 ms on /srv/a" and "timeout after 2990 ms on /srv/b" are one
  failure. The run counts failures per fingerprint (`Run.retries_by_fingerprint`).
- **Loop**: the same tool called with the same canonical arguments (sorted-keys JSON)
  `LOOP_THRESHOLD` times in a row.
- **No progress**: the observable state after a step (its assistant text and tool
  results) hashed; `NO_PROGRESS_THRESHOLD` identical states in a row.
- **Repeated failure**: one fingerprint failing `Run.max_retries_per_fingerprint`
  times (3 by default).

The counters live in `Run.guardrails` (so they survive a pause for an approval) and
are published as `guardrails` events: `{loop, no_progress, repeated_failure}`, each
`{count, threshold}`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from chat.models import Run, StopReason

LOOP_THRESHOLD = 5
NO_PROGRESS_THRESHOLD = 3

# Order matters: quoted text may hold paths and numbers, a uuid holds hex runs.
_NORMALISERS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\"[^\"]*\"|'[^']*'|`[^`]*`"), "<str>"),
    (re.compile(r"https?://\S+"), "<url>"),
    (
        re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I),
        "<uuid>",
    ),
    (re.compile(r"\b0x[0-9a-f]+\b|\b[0-9a-f]{8,}\b", re.I), "<hex>"),
    # An id: a token of 6+ letters, digits, _ or - that has both letters and digits.
    (re.compile(r"\b(?=[\w-]*\d)(?=[\w-]*[a-z])[\w-]{6,}\b", re.I), "<id>"),
    # A path: anything with a slash in it (a relative path, /srv/app, C:\\app\\x).
    (re.compile(r"(?:[a-z]:)?[\w.@~-]*(?:[\\/][\w.@~-]+)+[\\/]?", re.I), "<path>"),
    (re.compile(r"[-+]?\d+(?:[.,:]\d+)*"), "<n>"),
]


def normalise_error(text: str) -> str:
    """The error with what varies between occurrences taken out."""
    normal = text.strip().lower()
    for pattern, placeholder in _NORMALISERS:
        normal = pattern.sub(placeholder, normal)
    return " ".join(normal.split())


def fingerprint(text: str) -> str:
    """sha256 of the normalised error text: one value per kind of failure."""
    return hashlib.sha256(normalise_error(text).encode()).hexdigest()


def canonical_arguments(arguments: Any) -> str:
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str)


def state_hash(observation: Any) -> str:
    return hashlib.sha256(canonical_arguments(observation).encode()).hexdigest()


@dataclass(frozen=True)
class Trip:
    """A guardrail that tripped: the stop reason, the words for it, the details."""

    reason: StopReason
    detail: str
    context: dict[str, Any]


class Guardrails:
    """The run's guardrail counters, updated as the loop goes and kept in `run.guardrails`."""

    def __init__(self, run: Run) -> None:
        self.run = run
        state = run.guardrails if isinstance(run.guardrails, dict) else {}
        self.loop: dict[str, Any] = {
            "signature": "",
            "tool": "",
            "count": 0,
            **state.get("loop", {}),
        }
        self.no_progress: dict[str, Any] = {"state": "", "count": 0, **state.get("no_progress", {})}
        self.extra = {k: v for k, v in state.items() if k not in ("loop", "no_progress")}
        self.last_failure: dict[str, str] = dict(state.get("last_failure", {}))

    # -- what the loop reports ---------------------------------------------------------

    def tool_called(self, tool: str, arguments: Any) -> None:
        signature = hashlib.sha256(f"{tool}\n{canonical_arguments(arguments)}".encode()).hexdigest()
        if signature == self.loop["signature"]:
            self.loop["count"] += 1
        else:
            self.loop = {"signature": signature, "tool": tool, "count": 1}

    def step_observed(self, observation: Any) -> None:
        state = state_hash(observation)
        if state == self.no_progress["state"]:
            self.no_progress["count"] += 1
        else:
            self.no_progress = {"state": state, "count": 1}

    def failure_recorded(self, fingerprint: str, error: str) -> None:
        self.last_failure = {"fingerprint": fingerprint, "error": error[:500]}

    # -- what the loop asks ------------------------------------------------------------

    def repeated_failure(self) -> tuple[str, int]:
        """The fingerprint that failed most often, and how often."""
        retries = self.run.retries_by_fingerprint or {}
        if not retries:
            return "", 0
        worst = max(
            retries, key=lambda fp: (retries[fp], fp == self.last_failure.get("fingerprint"))
        )
        return worst, int(retries[worst])

    def tripped(self) -> Trip | None:
        """The first guardrail past its threshold: a repeated failure, a loop, no progress."""
        worst, count = self.repeated_failure()
        threshold = self.run.max_retries_per_fingerprint
        if threshold and count >= threshold:
            error = self.last_failure.get("error", "")
            if self.last_failure.get("fingerprint") != worst:
                error = ""
            return Trip(
                StopReason.REPEATED_FAILURE,
                f"The same failure (fingerprint {worst[:12]}) happened {count} times"
                + (f": {error}" if error else "."),
                {"fingerprint": worst, "count": count, "error": error},
            )
        if self.loop["count"] >= LOOP_THRESHOLD:
            return Trip(
                StopReason.LOOP_DETECTED,
                f"{self.loop['tool']} was called with the same arguments "
                f"{self.loop['count']} times in a row.",
                {"tool": self.loop["tool"], "count": self.loop["count"]},
            )
        if self.no_progress["count"] >= NO_PROGRESS_THRESHOLD:
            return Trip(
                StopReason.NO_PROGRESS,
                f"{self.no_progress['count']} steps in a row ended in the same state "
                "(same text, same tool results).",
                {"count": self.no_progress["count"]},
            )
        return None

    def counters(self) -> dict[str, Any]:
        """The `guardrails` event: each counter against its threshold."""
        return {
            "loop": {"count": self.loop["count"], "threshold": LOOP_THRESHOLD},
            "no_progress": {"count": self.no_progress["count"], "threshold": NO_PROGRESS_THRESHOLD},
            "repeated_failure": {
                "count": self.repeated_failure()[1],
                "threshold": self.run.max_retries_per_fingerprint,
            },
        }

    def state(self) -> dict[str, Any]:
        """What `Run.guardrails` keeps."""
        return {
            **self.extra,
            "loop": self.loop,
            "no_progress": self.no_progress,
            "last_failure": self.last_failure,
        }
