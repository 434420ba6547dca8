from __future__ import annotations

from healthmon.models.alerts import Alert, AlertKind, AlertRule
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
    "CrawlRecord",
    "Fingerprint",
    "FingerprintStatus",
    "HourCount",
    "IngestKey",
    "LogSource",
    "MinuteCount",
    "Sample",
    "ServiceMinute",
]
