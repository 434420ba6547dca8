"""The registry of error sources that the diagnosis reads its error patterns from.

`selfheal` may not import `healthmon` (the dependency points the other way), so the
health monitor registers a source here from its `AppConfig.ready()`:

    from selfheal.error_patterns import register_error_source
    register_error_source(top_error_patterns)

A source is a callable taking `limit` (keyword) and returning its most frequent
recent error patterns, each a mapping with `fingerprint`, `message`, `count` and
`last_seen` (a datetime or an ISO 8601 string). Several sources may be registered;
their patterns are merged by fingerprint.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime

log = logging.getLogger(__name__)

ErrorSource = Callable[..., Iterable[Mapping[str, Any]]]

_sources: list[ErrorSource] = []


@dataclass(frozen=True)
class ErrorPattern:
    fingerprint: str
    message: str
    count: int
    last_seen: datetime | None

    def as_evidence(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "message": self.message[:200],
            "count": self.count,
            "last_seen": self.last_seen.isoformat() if self.last_seen else None,
        }

    @classmethod
    def from_evidence(cls, values: Mapping[str, Any]) -> ErrorPattern:
        return cls(
            fingerprint=str(values["fingerprint"]),
            message=str(values.get("message") or ""),
            count=int(values.get("count") or 0),
            last_seen=_as_datetime(values.get("last_seen")),
        )


@dataclass
class ErrorPatternReport:
    """What the registered sources said: the merged top patterns and any failures."""

    sources: int
    patterns: list[ErrorPattern] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def register_error_source(source: ErrorSource) -> None:
    """Add a source of error patterns; registering the same one twice is a no-op."""
    if source not in _sources:
        _sources.append(source)


def unregister_error_source(source: ErrorSource) -> None:
    if source in _sources:
        _sources.remove(source)


def registered_error_sources() -> tuple[ErrorSource, ...]:
    return tuple(_sources)


def top_error_patterns(limit: int = 10) -> ErrorPatternReport:
    """The most frequent error patterns across every registered source.

    A failing source does not hide the others: its failure is reported instead.
    """
    report = ErrorPatternReport(sources=len(_sources))
    merged: dict[str, ErrorPattern] = {}
    for source in list(_sources):
        try:
            for values in source(limit=limit):
                pattern = ErrorPattern.from_evidence(values)
                known = merged.get(pattern.fingerprint)
                if known is not None:
                    pattern = ErrorPattern(
                        fingerprint=pattern.fingerprint,
                        message=known.message or pattern.message,
                        count=known.count + pattern.count,
                        last_seen=_latest(known.last_seen, pattern.last_seen),
                    )
                merged[pattern.fingerprint] = pattern
        except Exception as exc:
            log.exception("error source %r failed", source)
            report.failures.append(f"{_source_name(source)}: {exc}")
    report.patterns = sorted(merged.values(), key=lambda p: (-p.count, p.fingerprint))[:limit]
    return report


def _as_datetime(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    moment = value if isinstance(value, datetime) else parse_datetime(str(value))
    if moment is not None and timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)


def _source_name(source: ErrorSource) -> str:
    return getattr(source, "__qualname__", None) or repr(source)


FIX_TASK_KEY_PREFIX = "error-pattern:"


def fix_task_dedupe_key(fingerprint: str) -> str:
    """The de-duplication key of the task that fixes an error pattern: whoever opens
    one (repair, the health monitor) uses this key, so a pattern has one open task."""
    key = f"{FIX_TASK_KEY_PREFIX}{fingerprint}"
    if len(key) > 200:  # Task.dedupe_key's length
        key = f"{FIX_TASK_KEY_PREFIX}sha256:{hashlib.sha256(fingerprint.encode()).hexdigest()}"
    return key
