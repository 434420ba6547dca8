from __future__ import annotations

from healthmon.models.alerts import Alert, AlertKind, AlertRule
from healthmon.models.code import Finding, PullRequest, Repository, Scan
from healthmon.models.code_reports import CodeReport
from healthmon.models.crawls import CrawlRecord
from healthmon.models.fingerprints import (
    Fingerprint,
    FingerprintStatus,
    HourCount,
    MinuteCount,
    Sample,
    ServiceMinute,
)
from healthmon.models.sources import IngestKey, LogSource

__all__ = [
    "Alert",
    "AlertKind",
    "AlertRule",
    "CodeReport",
    "CrawlRecord",
    "Finding",
    "Fingerprint",
    "FingerprintStatus",
    "HourCount",
    "IngestKey",
    "LogSource",
    "MinuteCount",
    "PullRequest",
    "Repository",
    "Sample",
    "Scan",
    "ServiceMinute",
]
