"""The answers OTLP/HTTP expects, in the request's encoding: an
`ExportLogsServiceResponse` (with `partialSuccess` when records were rejected) on
success, a `google.rpc.Status` with a message on failure."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from healthmon.otlp.decoding import JSON, PROTOBUF

# gRPC status codes OTLP puts in a Status, by HTTP status.
_GRPC_CODES = {400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 413: 8, 415: 3, 429: 8, 503: 14}


@dataclass
class Answer:
    status: int
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


def accepted(kind: str, rejected: int, reasons: list[str]) -> Answer:
    response = ExportLogsServiceResponse()
    if rejected:
        response.partial_success.rejected_log_records = rejected
        shown = "; ".join(reasons[:5])
        more = f" (and {rejected - len(reasons[:5])} more)" if rejected > len(reasons[:5]) else ""
        response.partial_success.error_message = (
            f"{rejected} log record(s) rejected: {shown}{more}."
        )
    if kind == PROTOBUF:
        return Answer(200, response.SerializeToString(), PROTOBUF)
    body: dict[str, object] = {}
    if rejected:
        body["partialSuccess"] = {
            # int64 is a string in OTLP/JSON
            "rejectedLogRecords": str(rejected),
            "errorMessage": response.partial_success.error_message,
        }
    return Answer(200, json.dumps(body).encode(), JSON)


def refused(status: int, message: str, kind: str | None, **headers: str) -> Answer:
    """A failure as a `google.rpc.Status`: protobuf when the request was protobuf,
    JSON otherwise (a client that sent something else reads JSON best)."""
    code = _GRPC_CODES.get(status, 2)
    if kind == PROTOBUF:
        return Answer(status, _status_protobuf(code, message), PROTOBUF, headers)
    body = json.dumps({"code": code, "message": message}).encode()
    return Answer(status, body, JSON, headers)


def _status_protobuf(code: int, message: str) -> bytes:
    # google.rpc.Status is `int32 code = 1; string message = 2;` (details left out):
    # written by hand rather than depending on googleapis-common-protos for two fields.
    text = message.encode()
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        if number:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
