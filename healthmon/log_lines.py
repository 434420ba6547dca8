"""Log lines from a file or stdin (`bin/manage ingest_logs`) as `LogRecord`s.

Each line is read on its own: a JSON object is a structured record (its message in
`message`, `msg`, `body`, `log` or `text`; its level in `level`, `severity`,
`levelname` or `lvl`; its time in `timestamp`, `time`, `ts` or `@timestamp`, as ISO
8601 or epoch seconds, milliseconds or nanoseconds; `service` files it under another
service; every other field is kept as an attribute). Anything else is a plain line,
its level the first level word near its start (`ERROR`, `WARN`, ...). Bytes that are
not UTF-8 are replaced, never fatal.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO

from healthmon.ingest import IngestResult, LogRecord, ingest
from healthmon.levels import Level, parse_level
from healthmon.models import LogSource

BATCH_LINES = 500
MESSAGE_KEYS = ("message", "msg", "body", "log", "text")
LEVEL_KEYS = ("level", "severity", "levelname", "lvl", "severity_text")
TIME_KEYS = ("timestamp", "time", "ts", "@timestamp")
_LEVEL_WORD = re.compile(
    r"\b(TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|SEVERE|CRITICAL|FATAL|PANIC)\b"
)


@dataclass
class FileIngestTotals:
    lines: int = 0
    accepted: int = 0
    rejected: int = 0
    new_fingerprints: int = 0
    rejections: list[str] = field(default_factory=list)

    def add(self, result: IngestResult) -> None:
        self.accepted += result.accepted
        self.rejected += result.rejected
        self.new_fingerprints += len(result.new_fingerprints)
        room = 10 - len(self.rejections)
        self.rejections.extend(result.rejections[: max(0, room)])


def ingest_lines(
    source: LogSource, stream: BinaryIO, *, batch_lines: int = BATCH_LINES
) -> FileIngestTotals:
    """Stream `stream` into `source` in batches, each ingested (and committed) alone."""
    totals = FileIngestTotals()
    for batch in _batches(_records(stream, totals), batch_lines):
        totals.add(ingest(source, batch))
    return totals


def _records(stream: BinaryIO, totals: FileIngestTotals) -> Iterator[LogRecord]:
    for raw in stream:
        text = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not text.strip():
            continue
        totals.lines += 1
        yield read_line(text)


def _batches(records: Iterable[LogRecord], size: int) -> Iterator[list[LogRecord]]:
    batch: list[LogRecord] = []
    for record in records:
        batch.append(record)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def read_line(text: str) -> LogRecord:
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            fields = json.loads(stripped)
        except ValueError:
            fields = None
        if isinstance(fields, dict):
            return _structured(fields)
    return LogRecord(message=text, level=_plain_level(text))


def _structured(fields: dict[str, Any]) -> LogRecord:
    message = _take(fields, MESSAGE_KEYS)
    level = parse_level(_take(fields, LEVEL_KEYS))
    at = _moment(_take(fields, TIME_KEYS))
    service = _take(fields, ("service", "service.name"))
    if message is not None and not isinstance(message, str):
        message = json.dumps(message, ensure_ascii=False, default=str)
    return LogRecord(
        message=message or "",
        at=at,
        level=level,
        service=str(service) if isinstance(service, str | int) else "",
        attributes=fields,
    )


def _take(fields: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if key in fields:
            return fields.pop(key)
    return None


def _moment(value: Any) -> datetime | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
        for scale in (1e9, 1e6, 1e3):  # nanoseconds, microseconds, milliseconds
            if number > scale * 1e9:
                number /= scale
                break
        try:
            return datetime.fromtimestamp(number, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    try:
        moment = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _plain_level(text: str) -> Level:
    found = _LEVEL_WORD.search(text[:120])
    return parse_level(found.group(1)) if found else Level.INFO
