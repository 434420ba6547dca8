"""From an OTLP/HTTP body to log records: gzip undone within a size limit, then
`ExportLogsServiceRequest` read as protobuf (`opentelemetry-proto`) or as OTLP/JSON.

OTLP/JSON is not protobuf's canonical JSON: trace and span ids are hex, not base64
(`google.protobuf.json_format` reads them as base64 without complaint, so the ids
come out wrong), and `json_format.ParseDict` took 40 ms for a batch of 500 records
on this machine, most of the time a record may take. So JSON is read by a small
mapper of its own, straight from the parsed document to records; protobuf goes
through the generated classes.

A body that cannot be read as a request is `Malformed` (the whole batch is refused
with a 400 naming what is wrong). Inside a readable body, a record with a field that
cannot be read is rejected alone and named in the answer's `partialSuccess`.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber

from healthmon.ingest import LogRecord
from healthmon.levels import Level, otel_severity, parse_level

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
# Nesting of array and kvlist values a JSON body may use (protobuf's own limit is 100).
MAX_DEPTH = 32
STATUS_ATTRIBUTES = ("http.response.status_code", "http.status_code")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Malformed(Exception):
    """The body is not an ExportLogsServiceRequest; the message says why."""


class TooLarge(Exception):
    """The body, once decompressed, is over the size limit."""


class UnsupportedEncoding(Exception):
    """A Content-Encoding other than gzip or identity."""


@dataclass
class Decoded:
    records: list[LogRecord] = field(default_factory=list)
    rejections: list[str] = field(default_factory=list)  # one reason per rejected record


def media_type(content_type: str) -> str | None:
    """PROTOBUF or JSON for a Content-Type header (parameters ignored), else None."""
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind if kind in (PROTOBUF, JSON) else None


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """The body with its Content-Encoding undone. Decompression stops as soon as the
    output passes `limit` (`TooLarge`): a small gzip bomb is refused after at most
    `limit` bytes of output, not once it has filled the memory."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise UnsupportedEncoding(encoding)
    parts: list[bytes] = []
    size = 0
    rest = body
    while rest:  # a gzip stream may hold several members, one after the other
        member = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            part = member.decompress(rest, limit - size + 1)
        except zlib.error as error:
            raise Malformed(f"The gzip body is corrupt ({error}).") from None
        size += len(part)
        if size > limit:
            raise TooLarge
        if not member.eof:
            raise Malformed("The gzip body ends before its end (truncated).")
        parts.append(part)
        rest = member.unused_data
    return b"".join(parts)


def decode(body: bytes, kind: str) -> Decoded:
    return from_protobuf(body) if kind == PROTOBUF else from_json(body)


# --- protobuf ---------------------------------------------------------------------


def from_protobuf(body: bytes) -> Decoded:
    request = ExportLogsServiceRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as error:
        raise Malformed(
            f"The body is not a protobuf ExportLogsServiceRequest ({error}); a string "
            "field holding bytes that are not UTF-8 also makes it unreadable."
        ) from None
    decoded = Decoded()
    for resource_logs in request.resource_logs:
        resource = _pb_attributes(resource_logs.resource.attributes)
        service = _service_of(resource)
        for scope_logs in resource_logs.scope_logs:
            shared = {**resource, **_pb_attributes(scope_logs.scope.attributes)}
            for record in scope_logs.log_records:
                body_value = _pb_value(record.body, 0) if record.HasField("body") else None
                decoded.records.append(
                    _record(
                        service=service,
                        body=body_value,
                        severity_number=record.severity_number,
                        severity_text=record.severity_text,
                        nanos=record.time_unix_nano or record.observed_time_unix_nano,
                        attributes={**shared, **_pb_attributes(record.attributes)},
                        trace_id=record.trace_id.hex(),
                        span_id=record.span_id.hex(),
                    )
                )
    return decoded


def _pb_attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {pair.key: _pb_value(pair.value, 0) for pair in pairs}


def _pb_value(value: AnyValue, depth: int) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_pb_value(item, depth + 1) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {pair.key: _pb_value(pair.value, depth + 1) for pair in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    if kind == "double_value":
        return _plain_float(value.double_value)
    return getattr(value, kind)


# --- JSON -------------------------------------------------------------------------


def from_json(body: bytes) -> Decoded:
    try:
        document = json.loads(body)
    except UnicodeDecodeError as error:
        raise Malformed(
            f"The JSON body is not valid UTF-8 ({error.reason} at byte {error.start})."
        ) from None
    except RecursionError:
        raise Malformed("The JSON body nests too deeply.") from None
    except ValueError as error:
        raise Malformed(f"The body is not JSON ({error}).") from None
    if not isinstance(document, dict):
        raise Malformed("The JSON body must be an object (an ExportLogsServiceRequest).")
    decoded = Decoded()
    for r, resource_logs in enumerate(_objects(document, "resourceLogs", "")):
        where = f"resourceLogs[{r}]"
        resource_part = _object(resource_logs, "resource", where)
        resource = _json_attributes(resource_part, f"{where}.resource")
        service = _service_of(resource)
        for s, scope_logs in enumerate(_objects(resource_logs, "scopeLogs", where)):
            scope_where = f"{where}.scopeLogs[{s}]"
            scope = _json_attributes(_object(scope_logs, "scope", scope_where), scope_where)
            shared = {**resource, **scope}
            for n, record in enumerate(_objects(scope_logs, "logRecords", scope_where)):
                try:
                    decoded.records.append(_json_record(record, service, shared))
                except Malformed as error:
                    decoded.rejections.append(f"{scope_where}.logRecords[{n}]: {error}")
    return decoded


def _json_record(record: Mapping[str, Any], service: str, shared: dict[str, Any]) -> LogRecord:
    body = _json_value(record["body"], "body", 0) if "body" in record else None
    severity = record.get("severityNumber", 0)
    if isinstance(severity, str):
        try:
            severity = SeverityNumber.Value(severity)
        except ValueError:
            raise Malformed(f"severityNumber {severity!r} is not a severity") from None
    if isinstance(severity, bool) or not isinstance(severity, int):
        raise Malformed("severityNumber must be an integer")
    text = record.get("severityText", "")
    if not isinstance(text, str):
        raise Malformed("severityText must be a string")
    nanos = _json_nanos(record, "timeUnixNano") or _json_nanos(record, "observedTimeUnixNano")
    return _record(
        service=service,
        body=body,
        severity_number=severity,
        severity_text=text,
        nanos=nanos,
        attributes={**shared, **_json_attributes(record, "")},
        trace_id=_json_hex(record, "traceId"),
        span_id=_json_hex(record, "spanId"),
    )


def _objects(parent: Mapping[str, Any], name: str, where: str) -> list[Mapping[str, Any]]:
    items = parent.get(name, [])
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise Malformed(f"{_joined(where, name)} must be a list of objects.")
    return items


def _object(parent: Mapping[str, Any], name: str, where: str) -> Mapping[str, Any]:
    item = parent.get(name, {})
    if not isinstance(item, dict):
        raise Malformed(f"{_joined(where, name)} must be an object.")
    return item


def _json_attributes(parent: Mapping[str, Any], where: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for i, pair in enumerate(_objects(parent, "attributes", where)):
        key = pair.get("key")
        if not isinstance(key, str):
            raise Malformed(f"{_joined(where, 'attributes')}[{i}].key must be a string.")
        value = pair.get("value", {})
        string = value.get("stringValue") if type(value) is dict and len(value) == 1 else None
        if type(string) is str:
            attributes[key] = string  # the common case, without building a path
            continue
        try:
            attributes[key] = _json_value(value, "value", 0)
        except Malformed as error:  # where it is, worked out only when it is wrong
            raise Malformed(f"{_joined(where, 'attributes')}[{i}].{error}") from None
    return attributes


def _json_value(value: Any, where: str, depth: int) -> Any:
    """An AnyValue (`{"stringValue": "..."}`, ...) as a plain JSON value."""
    if not isinstance(value, dict):
        raise Malformed(f"{where} must be an AnyValue object")
    if depth > MAX_DEPTH:
        raise Malformed(f"{where} nests arrays or kvlists deeper than {MAX_DEPTH}")
    if "stringValue" in value:
        text = value["stringValue"]
        if not isinstance(text, str):
            raise Malformed(f"{where}.stringValue must be a string")
        return text
    if "boolValue" in value:
        flag = value["boolValue"]
        if not isinstance(flag, bool):
            raise Malformed(f"{where}.boolValue must be true or false")
        return flag
    if "intValue" in value:
        return _json_int(value["intValue"], f"{where}.intValue")
    if "doubleValue" in value:
        number = value["doubleValue"]
        if isinstance(number, str) and number in ("NaN", "Infinity", "-Infinity"):
            return number
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise Malformed(f"{where}.doubleValue must be a number")
        return _plain_float(float(number))
    if "arrayValue" in value:
        items = _object(value, "arrayValue", where).get("values", [])
        if not isinstance(items, list):
            raise Malformed(f"{where}.arrayValue.values must be a list")
        return [_json_value(item, f"{where}.arrayValue", depth + 1) for item in items]
    if "kvlistValue" in value:
        pairs = _objects(_object(value, "kvlistValue", where), "values", f"{where}.kvlistValue")
        listed: dict[str, Any] = {}
        for pair in pairs:
            key = pair.get("key")
            if not isinstance(key, str):
                raise Malformed(f"{where}.kvlistValue has a key that is not a string")
            listed[key] = _json_value(pair.get("value", {}), f"{where}.{key}", depth + 1)
        return listed
    if "bytesValue" in value:
        encoded = value["bytesValue"]
        if not isinstance(encoded, str):
            raise Malformed(f"{where}.bytesValue must be a base64 string")
        return encoded
    return None  # an empty AnyValue


def _json_int(value: Any, where: str) -> int:
    # int64 fields come as strings in OTLP/JSON; numbers are accepted too.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit() and len(value) <= 20:
        return int(value)
    raise Malformed(f"{where} must be an integer (a decimal string)")


def _json_nanos(record: Mapping[str, Any], name: str) -> int:
    if name not in record:
        return 0
    nanos = _json_int(record[name], name)
    if not 0 <= nanos < 2**64:
        raise Malformed(f"{name} must be an unsigned 64-bit integer")
    return nanos


def _json_hex(record: Mapping[str, Any], name: str) -> str:
    value = record.get(name, "")
    try:
        if not isinstance(value, str):
            raise ValueError
        bytes.fromhex(value)
    except ValueError:
        raise Malformed(f"{name} must be a hex string") from None
    return value.lower()


def _joined(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


# --- one record -------------------------------------------------------------------


def _service_of(resource: Mapping[str, Any]) -> str:
    name = resource.get("service.name")
    return name if isinstance(name, str) else ""


def _plain_float(number: float) -> float | str:
    # NaN and the infinities are not JSON (PostgreSQL's jsonb refuses them).
    return number if math.isfinite(number) else str(number)


def _record(
    *,
    service: str,
    body: Any,
    severity_number: int,
    severity_text: str,
    nanos: int,
    attributes: dict[str, Any],
    trace_id: str,
    span_id: str,
) -> LogRecord:
    if body is None:
        message = ""
    elif isinstance(body, str):
        message = body
    else:
        message = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    stacktrace = attributes.get("exception.stacktrace")
    if isinstance(stacktrace, str) and stacktrace.strip():
        # The traceback is what groups an exception (its type and frames); the body
        # ("failed to handle request") stays with the sample.
        if message.strip() and message != stacktrace:
            attributes["log.body"] = message
        message = stacktrace
    elif not message.strip():
        parts = (attributes.get("exception.type"), attributes.get("exception.message"))
        message = ": ".join(str(part) for part in parts if part)
    if severity_number > 0:
        level = otel_severity(severity_number)
    else:
        level = parse_level(severity_text) if severity_text else Level.INFO
    at = None
    if nanos:
        try:
            at = _EPOCH + timedelta(microseconds=nanos // 1000)
        except OverflowError:
            attributes["original_time_unix_nano"] = str(nanos)  # past year 9999
    if trace_id:
        attributes["trace_id"] = trace_id
    if span_id:
        attributes["span_id"] = span_id
    return LogRecord(
        message=message,
        at=at,
        level=level,
        service=service,
        attributes=attributes,
        http_status=_http_status(attributes),
    )


def _http_status(attributes: Mapping[str, Any]) -> int | None:
    for name in STATUS_ATTRIBUTES:
        value = attributes.get(name)
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
            return value
    return None
