"""Sends OTLP/HTTP requests to the log receiver's ASGI application in-process, as
daphne would, its work in the test's transaction; and builds request bodies."""

from __future__ import annotations

import gzip
import json
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async

from healthmon.otlp.receiver import PATH, LogReceiver
from tests.routing.asgi_driver import Client, scope

IN_TEST_TRANSACTION = LogReceiver(run_sync=lambda work: sync_to_async(work)())

JSON = "application/json"
PROTOBUF = "application/x-protobuf"


def post(
    body: bytes,
    *,
    key: str | None = None,
    content_type: str = JSON,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    chunks: int = 1,
) -> Client:
    sent = {"Content-Type": content_type, **(headers or {})}
    if key is not None:
        sent.setdefault("Authorization", f"Bearer {key}")
    size = max(1, -(-len(body) // chunks))
    parts = [body[at : at + size] for at in range(0, len(body), size)] or [b""]
    messages = [
        {"type": "http.request", "body": part, "more_body": n < len(parts) - 1}
        for n, part in enumerate(parts)
    ]
    client = Client(messages)
    async_to_sync(IN_TEST_TRANSACTION)(
        scope(PATH, method, headers=sent), client.receive, client.send
    )
    return client


def value(item: Any) -> dict[str, Any]:
    """A plain value as an OTLP/JSON AnyValue."""
    if isinstance(item, bool):
        return {"boolValue": item}
    if isinstance(item, int):
        return {"intValue": str(item)}
    if isinstance(item, float):
        return {"doubleValue": item}
    if isinstance(item, dict):
        return {"kvlistValue": {"values": attributes(item)}}
    if isinstance(item, list):
        return {"arrayValue": {"values": [value(v) for v in item]}}
    return {"stringValue": item}


def attributes(items: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": key, "value": value(item)} for key, item in items.items()]


def json_request(records: list[dict[str, Any]], service: str | None = "checkout") -> dict[str, Any]:
    resource = {"attributes": attributes({"service.name": service})} if service else {}
    return {
        "resourceLogs": [
            {
                "resource": resource,
                "scopeLogs": [{"scope": {"name": "app"}, "logRecords": records}],
            }
        ]
    }


def record(message: Any = "user 42 logged in", severity: int = 9, **fields: Any) -> dict[str, Any]:
    made: dict[str, Any] = {"severityNumber": severity, **fields}
    if message is not None:
        made["body"] = value(message)
    return made


def encoded(document: dict[str, Any], *, compress: bool = False) -> bytes:
    data = json.dumps(document).encode()
    return gzip.compress(data) if compress else data
