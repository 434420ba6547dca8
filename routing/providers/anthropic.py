"""The client of Anthropic's native Messages API (`POST {base_url}/v1/messages`).

It speaks to the rest of the product as every provider does (`ChatRequest` in,
`Completion` or `StreamChunk`s out; `anthropic_format` translates), so a route may
name a Claude model behind `/v1/chat/completions`, `/v1/messages` or the agent loop.
Natively rather than through an OpenAI-compatible layer because the native answer
reports prompt caching (`cache_read_input_tokens`, `cache_creation_input_tokens`),
which is priced at the catalog's cache prices.

What a failure means for the caller (`ProviderError.retryable`: another model may
succeed):

=========================  =========================  =========
HTTP status / event        code                       retryable
=========================  =========================  =========
400 prompt too long        context_length_exceeded    yes (a larger model may fit it)
400, 413, other 4xx        bad_request                no (the request itself is wrong)
401                        unauthorized               no (the key is wrong: fix the config)
403                        forbidden                  no
404                        model_not_found            yes (a fallback model may exist)
429                        rate_limited               yes, with `retry_after` seconds
529 and other 5xx          overloaded/upstream_error  yes, with `retry_after` when sent
timeouts, connections      timeout/connection_*       yes
`error` event in a stream  by its type                as its status would be
=========================  =========================  =========

The key goes in `x-api-key` and is redacted from anything raised or logged.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from routing.providers.anthropic_format import (
    StreamedMessage,
    UnsupportedContent,
    completion_of,
    request_body,
)
from routing.providers.base import ChatRequest, Completion, ProviderError, StreamChunk
from routing.providers.upstream_http import (
    UpstreamClient,
    clip,
    json_body,
    retry_after_seconds,
    sse_data,
)

API_VERSION = "2023-06-01"
# Anthropic's error types, by the status they come with (an `error` event in a stream
# names its type only).
_STATUS_OF_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


class AnthropicProvider(UpstreamClient):
    """Claude through its own API; the client and its failures as every upstream's."""

    def __init__(
        self,
        base_url: str,
        api_key: str = "",
        *,
        timeout: float = 60.0,
        label: str = "anthropic",
    ) -> None:
        headers = {"Content-Type": "application/json", "anthropic-version": API_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        base_url = base_url.rstrip("/")
        super().__init__(base_url, api_key, timeout=timeout, label=label, headers=headers)
        # `https://api.anthropic.com` as Anthropic documents it; `.../v1` works too.
        self.url = base_url + ("/messages" if base_url.endswith("/v1") else "/v1/messages")

    def complete(self, request: ChatRequest) -> Completion:
        body = self._body(request, stream=False)
        try:
            response = self._client.post(self.url, content=body)
            response.read()
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        if response.status_code >= 400:
            raise self._status_error(response)
        message = self._parse(response.content)
        if not isinstance(message, dict) or message.get("type") == "error":
            raise self._event_error(message)
        return completion_of(message)

    def stream(self, request: ChatRequest) -> Iterator[StreamChunk | Completion]:
        body = self._body(request, stream=True)
        try:
            with self._client.stream(
                "POST", self.url, content=body, headers={"Accept": "text/event-stream"}
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._status_error(response)
                answer = StreamedMessage()
                for data in sse_data(response.iter_lines()):
                    event = self._parse(data)
                    if not isinstance(event, dict) or event.get("type") == "error":
                        raise self._event_error(event)
                    yield from answer.add(event)
                if not answer.stopped:
                    raise self._error(
                        "the stream ended before the answer was complete", code="connection_lost"
                    )
                yield answer.completion()
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None

    def _body(self, request: ChatRequest, *, stream: bool) -> bytes:
        try:
            body = request_body(request, stream=stream)
        except UnsupportedContent as exc:
            # Another model of the route (not Anthropic's) may take it.
            raise self._error(f"cannot send {exc}", code="unsupported_content") from None
        return json_body(body)

    def _status_error(self, response: httpx.Response) -> ProviderError:
        status = response.status_code
        try:
            body = json.loads(response.content)
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        detail = clip(
            str(error.get("message") or error.get("type") or "")
            if isinstance(error, dict)
            else response.text.strip()
        )
        code, retryable = _classify(status, detail)
        retry_after = (
            retry_after_seconds(response.headers) if status == 429 or status >= 500 else None
        )
        text = f"HTTP {status} {response.reason_phrase}" + (f": {detail}" if detail else "")
        if retry_after is not None:
            text += f" (retry after {retry_after:g} s)"
        return self._error(
            text, code=code, status=status, retryable=retryable, retry_after=retry_after
        )

    def _event_error(self, event: Any) -> ProviderError:
        """An `error` event in a stream (Anthropic sends `overloaded_error` this way
        once a stream has started), or an error body with a 200."""
        error = event.get("error") if isinstance(event, dict) else None
        if not isinstance(error, dict):
            return self._error(f"unexpected answer {str(event)[:80]!r}", code="invalid_response")
        kind = str(error.get("type") or "api_error")
        detail = clip(str(error.get("message") or "no message"))
        status = _STATUS_OF_TYPE.get(kind, 500)
        code, retryable = _classify(status, detail)
        return self._error(
            f"error in the answer ({kind}): {detail}", code=code, status=status, retryable=retryable
        )


def _classify(status: int, detail: str) -> tuple[str, bool]:
    """(code, retryable) for an HTTP error status; see the module docstring."""
    lowered = detail.lower()
    if status == 404:
        return "model_not_found", True
    if status == 429:
        return "rate_limited", True
    if status == 529:
        return "overloaded", True
    if status >= 500 or status == 408:
        return "upstream_error", True
    if status == 400 and ("prompt is too long" in lowered or "context window" in lowered):
        return "context_length_exceeded", True
    return {401: "unauthorized", 403: "forbidden"}.get(status, "bad_request"), False
