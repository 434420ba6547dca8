"""Healthmon's metrics on `/metrics` (see `controlplane.metrics`): log records
ingested and rejected, by source ("otlp", "railway", ...). The log monitor is still
to come; it calls `count_log_records` for each batch it takes in."""

from __future__ import annotations

from prometheus_client import Counter

LOG_RECORDS_INGESTED = Counter(
    "healthmon_log_records_ingested",
    "Log records taken in by the log monitor, by source.",
    ["source"],
)
LOG_RECORDS_REJECTED = Counter(
    "healthmon_log_records_rejected",
    "Log records refused by the log monitor (malformed, over a limit), by source.",
    ["source"],
)


def count_log_records(source: str, *, ingested: int, rejected: int = 0) -> None:
    """One batch from `source`: how many records were kept and how many refused."""
    if ingested:
        LOG_RECORDS_INGESTED.labels(source).inc(ingested)
    if rejected:
        LOG_RECORDS_REJECTED.labels(source).inc(rejected)
