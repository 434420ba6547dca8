"""Railway's log lines as `LogRecord`s, and the identity that de-duplicates a line
read twice (in the overlap window of two crawls, or on two pages)."""

from __future__ import annotations

import hashlib
import json
from http import HTTPStatus
from typing import Any

from healthmon.ingest import LogRecord
from healthmon.levels import Level, parse_level
from healthmon.railway.client import attribute_value, parse_timestamp

HTTP_STREAM = "http"
# HTTP log fields kept as attributes (the rest are in the message or the status).
_HTTP_ATTRIBUTES = (
    "requestId",
    "totalDuration",
    "host",
    "clientUa",
    "srcIp",
    "edgeRegion",
    "txBytes",
    "rxBytes",
    "upstreamRqDuration",
    "upstreamAddress",
    "upstreamProto",
    "downstreamProto",
    "upstreamErrors",
    "responseDetails",
    "deploymentId",
    "deploymentInstanceId",
)


def line_identity(stream: str, line: dict[str, Any]) -> str:
    """The same line read twice has the same identity; two lines differing in time,
    text or attributes do not."""
    if stream == HTTP_STREAM:
        parts: list[Any] = [stream, line.get("timestamp"), line.get("requestId"), line.get("path")]
    else:
        attributes = sorted(
            (str(item.get("key")), str(item.get("value")))
            for item in line.get("attributes") or []
            if isinstance(item, dict)
        )
        parts = [stream, line.get("timestamp"), line.get("message"), attributes]
    text = json.dumps(parts, default=str, ensure_ascii=False)
    return hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=12).hexdigest()


def line_record(stream: str, line: dict[str, Any]) -> LogRecord:
    """Raises ValueError for a line without a readable timestamp."""
    at = parse_timestamp(str(line.get("timestamp") or ""))
    if stream == HTTP_STREAM:
        return _http_record(line, at)
    attributes: dict[str, Any] = {}
    for item in line.get("attributes") or []:
        if isinstance(item, dict) and item.get("key"):
            attributes[str(item["key"])] = attribute_value(str(item.get("value", "")))
    tags = line.get("tags") or {}
    for tag in ("deploymentId", "serviceId"):
        if isinstance(tags, dict) and tags.get(tag):
            attributes.setdefault(f"railway.{tag}", tags[tag])
    level = parse_level(
        line.get("severity") or attributes.get("level") or attributes.get("severity")
    )
    return LogRecord(
        message=str(line.get("message") or ""), at=at, level=level, attributes=attributes
    )


def _http_record(line: dict[str, Any], at: Any) -> LogRecord:
    try:
        status = int(line.get("httpStatus") or 0)
    except (TypeError, ValueError):
        status = 0
    method, path = str(line.get("method") or "?"), str(line.get("path") or "/")
    if status >= 500:
        level = Level.ERROR
    elif status >= 400:
        level = Level.WARNING
    else:
        level = Level.INFO
    attributes = {
        f"http.{name}": line[name] for name in _HTTP_ATTRIBUTES if line.get(name) not in (None, "")
    }
    attributes.update({"http.method": method, "http.path": path})
    return LogRecord(
        # The status's phrase keeps apart groups the grouper would merge on numbers alone.
        message=f"{method} {path} {status} {_phrase(status)}".rstrip(),
        at=at,
        level=level,
        attributes=attributes,
        http_status=status or None,
    )


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
