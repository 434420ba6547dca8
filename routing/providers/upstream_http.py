"""What every provider speaking HTTP to an upstream does the same way: its client and
how it fails (`UpstreamClient`), the data of server-sent events, how long a rate limit
asks to wait, and a JSON body with money's exact digits kept."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from controlplane.money import dumps_exact
from routing.providers.base import ProviderError


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


MAX_MESSAGE_CHARS = 500


def clip(text: str) -> str:
    """An upstream's error text, cut to what a log line and an error message can hold."""
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS] + "…"


class _Client(httpx.Client):
    """httpx's client, whose whole answers (all but `stream=True`) leave no reference
    cycle behind: httpx's answer and its stream refer to each other, so, read and
    closed, an answer and the 40-odd objects of its request waited for the cyclic
    garbage collector, a pause of a few tenths of a millisecond every 20 calls or so,
    in the middle of a later one. With its stream the bytes it read, it is freed as
    soon as it is dropped."""

    def send(
        self, request: httpx.Request, *, stream: bool = False, **kwargs: Any
    ) -> httpx.Response:
        response = super().send(request, stream=stream, **kwargs)
        if not stream:
            response.stream = httpx.ByteStream(response.content)
        return response


class UpstreamClient:
    """What every provider speaking HTTP to an upstream has in common: one base URL,
    key and `httpx.Client` (a connection pool shared by threads, so `provider_for()`
    keeps one instance per catalog provider), and one way of failing: a
    `ProviderError` whose message names the provider, never holds the key, and is
    logged once as it is made."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float,
        label: str,
        headers: dict[str, str],
    ) -> None:
        self.base_url = base_url
        self.label = label
        self.timeout = timeout
        self._api_key = api_key
        self._client = _Client(headers=headers, timeout=httpx.Timeout(timeout))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label} {self.base_url}>"

    def close(self) -> None:
        self._client.close()

    def _parse(self, text: str | bytes, numbers: Callable[[str], Any] = Decimal) -> Any:
        """A JSON answer with exact numbers (`numbers` reads each one with a fraction or
        exponent). NaN and Infinity are not JSON: kept as the text they are, so a figure
        using them is flagged (`pricing.checked_usage`) and a body handed on to the
        caller is still JSON."""
        try:
            return json.loads(text, parse_float=numbers, parse_constant=str)
        except (ValueError, RecursionError):
            snippet = text[:80] if isinstance(text, str) else text[:80].decode(errors="replace")
            raise self._error(
                f"the response is not valid JSON: {snippet!r}", code="invalid_response"
            ) from None

    def _error(
        self,
        detail: str,
        *,
        code: str,
        status: int | None = None,
        retryable: bool = True,
        retry_after: float | None = None,
    ) -> ProviderError:
        message = self._redact(f"{self.label}: {detail}")
        # Under the provider's own module, as each provider logged before.
        logging.getLogger(type(self).__module__).warning(
            "provider call failed (%s): %s", code, message
        )
        return ProviderError(
            message, status=status, retryable=retryable, retry_after=retry_after, code=code
        )

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "[redacted]") if self._api_key else text

    def _transport_error(self, exc: httpx.HTTPError) -> ProviderError:
        kind = type(exc).__name__
        if isinstance(exc, httpx.TimeoutException):
            return self._error(f"no answer within {self.timeout:g} s ({kind})", code="timeout")
        if isinstance(exc, httpx.ConnectError):
            return self._error(
                f"could not connect to {self.base_url} ({kind})", code="connection_failed"
            )
        if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
            return self._error(
                f"the connection was dropped before the answer was complete ({kind}: {exc})",
                code="connection_lost",
            )
        return self._error(f"network error ({kind}: {exc})", code="connection_failed")
