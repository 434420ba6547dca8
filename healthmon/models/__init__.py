from __future__ import annotations

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
