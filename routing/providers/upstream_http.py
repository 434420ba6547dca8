"""What every provider speaking HTTP to an upstream reads and writes the same way:
the data of server-sent events, how long a rate limit asks to wait, and a JSON body
with money's exact digits kept."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from controlplane.money import dumps_exact


def sse_data(lines: Iterator[str]) -> Iterator[str]:
    """The data of each server-sent event; comment lines (`: OPENROUTER PROCESSING`),
    `event:`, `id:` and `retry:` fields are skipped."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value.removeprefix(" "))
    if data:  # a last event without its blank line
        yield "\n".join(data)


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """Seconds to wait: `Retry-After` (seconds or an HTTP date), else OpenRouter's
    `X-RateLimit-Reset` (epoch milliseconds)."""
    value = headers.get("retry-after")
    if value:
        try:
            return max(float(value), 0.0)
        except ValueError:
            pass
        try:
            return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
        except (TypeError, ValueError):
            pass
    reset = headers.get("x-ratelimit-reset")
    if reset:
        try:
            return max(float(reset) / 1000 - time.time(), 0.0)
        except ValueError:
            pass
    return None


def json_body(body: dict[str, Any]) -> bytes:
    try:
        return json.dumps(body, separators=(",", ":")).encode()
    except TypeError:  # a body read with loads_exact holds Decimals: keep their digits
        return dumps_exact(body).encode()
