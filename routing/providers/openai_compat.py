"""The one HTTP client for every OpenAI-compatible chat-completions endpoint (and its
`/embeddings` and `/audio/speech`, read in `routing.providers.embeddings` and
`.speech`).

OpenRouter, OpenAI, Ollama and vLLM (their `/v1` endpoints) and any compatible server
all take `POST {base_url}/chat/completions`; `base_url` already ends in `/v1` or
`/api/v1`. Streaming reads server-sent events with `httpx.Client.stream`.

What a failure means for the caller (`ProviderError.retryable` says whether another
model may succeed, so the router tries the next fallback):

=========================  =========================  =========
HTTP status / event        code                       retryable
=========================  =========================  =========
400 invalid model id       model_not_found            yes
400 context too long       context_length_exceeded    yes (a larger model may fit it)
400, 413, 422, other 4xx   bad_request                no (the request itself is wrong)
401                        unauthorized               no (the key is wrong: fix the config)
403                        forbidden                  no (refused, e.g. moderation)
402                        payment_required           yes (another provider may have credit)
404                        model_not_found            yes (a fallback model may exist)
408, timeouts              timeout                    yes
429                        rate_limited               yes, with `retry_after` seconds
5xx                        upstream_error             yes
connection refused         connection_failed          yes
connection dropped         connection_lost            yes (before or during the answer)
error event in a 200       by its code, else          yes unless its code is one of
stream (or 200 body)       upstream_error             the non-retryable statuses above
=========================  =========================  =========

The API key is sent as `Authorization: Bearer ...` and never appears in an error
message, a log line or this object's repr: anything the upstream echoes back is
redacted before it is raised.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx

from controlplane.money import dumps_exact, loads_exact
from routing.providers import transcription
from routing.providers.base import (
    ChatRequest,
    Completion,
    ProviderError,
    StreamChunk,
    ToolCall,
    Usage,
)
from routing.providers.embeddings import EmbeddingRequest, upstream_embeddings
from routing.providers.speech import SpeechRequest, SpokenAudio, upstream_speech
from routing.providers.upstream_http import (
    UpstreamClient,
    clip,
    json_body,
    retry_after_seconds,
    sse_data,
)

NOT_RETRYABLE = {400: "bad_request", 401: "unauthorized", 403: "forbidden"}


class OpenAICompatibleProvider(UpstreamClient):
    """A chat-completions client for one base URL and key.

    One instance keeps one `httpx.Client` (a connection pool, safe to share between
    threads), so callers should reuse instances: `provider_for()` does.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str = "",
        *,
        timeout: float = 60.0,
        label: str = "openai-compatible",
        headers: dict[str, str] | None = None,
    ) -> None:
        request_headers = {"Content-Type": "application/json", **(headers or {})}
        if api_key:
            request_headers["Authorization"] = f"Bearer {api_key}"
        base_url = base_url.rstrip("/")
        super().__init__(base_url, api_key, timeout=timeout, label=label, headers=request_headers)
        self.url = f"{base_url}/chat/completions"

    # -- the calls -----------------------------------------------------------------

    def complete(self, request: ChatRequest) -> Completion:
        try:
            response = self._client.post(self.url, content=json_body(request.body(stream=False)))
            response.read()
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        if response.status_code >= 400:
            raise self._status_error(response)
        body = self._parse(response.content)
        return self._completion_from_body(body)

    def stream(self, request: ChatRequest) -> Iterator[StreamChunk | Completion]:
        """Yield one chunk per data event (the usage-only event included, so a
        pass-through sees every event), then the final Completion."""
        try:
            with self._client.stream(
                "POST",
                self.url,
                content=json_body(request.body(stream=True)),
                headers={"Accept": "text/event-stream"},
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._status_error(response)
                if response.headers.get("content-type", "").startswith("application/json"):
                    # A server that ignored `stream` (or put its error in a 200 body).
                    response.read()
                    completion = self._completion_from_body(self._parse(response.content))
                    yield _chunk_of(completion)
                    yield completion
                    return
                yield from self._read_events(response)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None

    def transcribe(self, request: transcription.TranscriptionRequest) -> transcription.Transcript:
        return transcription.upstream_transcription(self, request)

    def embed(self, request: EmbeddingRequest) -> Completion:
        return upstream_embeddings(self, request)

    def speak(self, request: SpeechRequest) -> SpokenAudio:
        return upstream_speech(self, request)

    # -- other endpoints (`routing.providers.embeddings`, `.speech`, `.transcription`) --

    def post(
        self, path: str, content: bytes, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """`POST {base_url}{path}`, its whole answer; failures mapped as a chat's are
        (the module docstring's table)."""
        try:
            response = self._client.post(f"{self.base_url}{path}", content=content, headers=headers)
            response.read()
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        if response.status_code >= 400:
            raise self._status_error(response)
        return response

    def post_json(
        self,
        path: str,
        body: dict[str, Any],
        numbers: Callable[[str], Any] = Decimal,
        read: Callable[[bytes], Any] | None = None,
    ) -> Any:
        """`POST {base_url}{path}` with a JSON body; its JSON answer, its numbers read
        by `numbers` (exact by default). `read`: a faster reading of the answers of
        the shape expected, None for any other, which is then read as JSON."""
        response = self.post(path, json_body(body))
        answer = read(response.content) if read is not None else None
        if answer is None:
            answer = self._parse(response.content, numbers)
        if isinstance(answer, dict) and "error" in answer:
            raise self._error_event(answer["error"])
        return answer

    def open_stream(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """`POST {base_url}{path}`, its answer left open to be read as it comes (the
        caller closes it); an error status is raised, mapped, with the answer closed."""
        try:
            response = self._client.send(
                self._client.build_request(
                    "POST", f"{self.base_url}{path}", content=json_body(body)
                ),
                stream=True,
            )
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        if response.status_code >= 400:
            try:
                response.read()
            except httpx.HTTPError as exc:
                raise self._transport_error(exc) from None
            finally:
                response.close()
            raise self._status_error(response)
        return response

    def parse_json(self, text: str | bytes) -> Any:
        return self._parse(text)

    def failure(self, detail: str, *, code: str) -> ProviderError:
        """A retryable failure of this provider, its key redacted."""
        return self._error(detail, code=code)

    def error_in_answer(self, error: Any) -> ProviderError:
        return self._error_event(error)

    def transport_failure(self, exc: httpx.HTTPError) -> ProviderError:
        return self._transport_error(exc)

    # -- reading answers -----------------------------------------------------------

    def _read_events(self, response: httpx.Response) -> Iterator[StreamChunk | Completion]:
        answer = _StreamedAnswer()
        finished = False
        done = False
        for data in sse_data(response.iter_lines()):
            # Read on past [DONE] to the end of the body, so the connection goes back
            # to the pool instead of being closed.
            if done or data == "[DONE]":
                done = finished = True
                continue
            event = self._parse(data)
            if not isinstance(event, dict):
                raise self._error(f"unexpected stream event {data[:80]!r}", code="invalid_response")
            if "error" in event:
                raise self._error_event(event["error"])
            chunk = answer.add(event)
            finished = finished or chunk.finish_reason is not None
            yield chunk
        if not finished:
            # A clean end of the body that never said [DONE] nor why the answer stopped.
            raise self._error(
                "the stream ended before the answer was complete", code="connection_lost"
            )
        yield answer.completion()

    def _completion_from_body(self, body: Any) -> Completion:
        if not isinstance(body, dict):
            raise self._error("the response is not a JSON object", code="invalid_response")
        if "error" in body:
            raise self._error_event(body["error"])
        choices = body.get("choices") or [{}]
        message = choices[0].get("message") or {}
        return Completion(
            content=message.get("content") or "",
            tool_calls=[
                ToolCall(
                    id=call.get("id") or f"call_{index}",
                    name=(call.get("function") or {}).get("name") or "",
                    arguments=_arguments_text((call.get("function") or {}).get("arguments")),
                )
                for index, call in enumerate(message.get("tool_calls") or [])
            ],
            finish_reason=choices[0].get("finish_reason"),
            usage=Usage.from_openai(body.get("usage")),
            model=body.get("model") or "",
            response_id=body.get("id") or "",
            raw=body,
        )

    # -- failures ------------------------------------------------------------------

    def _status_error(self, response: httpx.Response) -> ProviderError:
        status = response.status_code
        detail = _upstream_message(response)
        code, retryable = _classify(status, detail)
        retry_after = retry_after_seconds(response.headers) if status == 429 else None
        text = f"HTTP {status} {response.reason_phrase}"
        if detail:
            text += f": {detail}"
        if retry_after is not None:
            text += f" (retry after {retry_after:g} s)"
        return self._error(
            text, code=code, status=status, retryable=retryable, retry_after=retry_after
        )

    def _error_event(self, error: Any) -> ProviderError:
        """An `{"error": {...}}` object inside a 200 answer (OpenRouter does this when
        the upstream fails after the stream started)."""
        if not isinstance(error, dict):
            error = {"message": str(error)}
        raw_code = error.get("code")
        detail = clip(str(error.get("message") or "no message"))
        status = _int_or_none(raw_code)
        if status is not None and 400 <= status < 600:
            code, retryable = _classify(status, detail)
        else:
            code, retryable = "upstream_error", True
        label = f" ({raw_code})" if raw_code not in (None, "") else ""
        return self._error(
            f"error in the answer{label}: {detail}", code=code, status=status, retryable=retryable
        )


class _StreamedAnswer:
    """Accumulates stream events into the final Completion."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.tool_calls: dict[int, ToolCall] = {}
        self.finish_reason: str | None = None
        self.usage = Usage()
        self.model = ""
        self.response_id = ""

    def add(self, event: dict[str, Any]) -> StreamChunk:
        self.model = event.get("model") or self.model
        self.response_id = event.get("id") or self.response_id
        if event.get("usage"):
            self.usage = Usage.from_openai(event["usage"])
        chunk = StreamChunk(raw=event)
        # Only the first choice is an answer; n > 1 is not something callers ask for.
        choice = next((c for c in event.get("choices") or [] if c.get("index", 0) == 0), None)
        if choice is None:
            return chunk
        delta = choice.get("delta") or {}
        chunk.content = delta.get("content") or ""
        chunk.tool_call_deltas = list(delta.get("tool_calls") or [])
        chunk.finish_reason = choice.get("finish_reason")
        self.content.append(chunk.content)
        for tool_delta in chunk.tool_call_deltas:
            self._add_tool_delta(tool_delta)
        if chunk.finish_reason:
            self.finish_reason = chunk.finish_reason
        return chunk

    def _add_tool_delta(self, delta: dict[str, Any]) -> None:
        index = _int_or_none(delta.get("index"))
        if index is None:
            # Some servers leave out `index`: a new id starts a new call.
            last = max(self.tool_calls, default=None)
            new_id = delta.get("id")
            is_new = last is None or (new_id and new_id != self.tool_calls[last].id)
            index = (last + 1 if last is not None else 0) if is_new else last
        assert index is not None
        call = self.tool_calls.setdefault(index, ToolCall(id="", name="", arguments=""))
        function = delta.get("function") or {}
        call.id = call.id or delta.get("id") or ""
        name = function.get("name") or ""
        if name and name != call.name:  # some servers repeat the name on every delta
            call.name += name
        arguments = function.get("arguments")
        if arguments:
            call.arguments += _arguments_text(arguments)

    def completion(self) -> Completion:
        return Completion(
            content="".join(self.content),
            tool_calls=[
                ToolCall(id=call.id or f"call_{index}", name=call.name, arguments=call.arguments)
                for index, call in sorted(self.tool_calls.items())
            ],
            finish_reason=self.finish_reason,
            usage=self.usage,
            model=self.model,
            response_id=self.response_id,
        )


def _chunk_of(completion: Completion) -> StreamChunk:
    """One chunk carrying a whole (non-streamed) answer, shaped as a stream event."""
    tool_deltas = [
        {
            "index": index,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        for index, call in enumerate(completion.tool_calls)
    ]
    delta: dict[str, Any] = {"role": "assistant", "content": completion.content}
    if tool_deltas:
        delta["tool_calls"] = tool_deltas
    raw = completion.raw or {}
    event: dict[str, Any] = {
        "id": completion.response_id,
        "object": "chat.completion.chunk",
        "created": raw.get("created", int(time.time())),
        "model": completion.model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": completion.finish_reason}],
    }
    if raw.get("usage"):
        event["usage"] = raw["usage"]
    return StreamChunk(
        content=completion.content,
        tool_call_deltas=tool_deltas,
        finish_reason=completion.finish_reason,
        raw=event,
    )


def _classify(status: int, detail: str) -> tuple[str, bool]:
    """(code, retryable) for an HTTP error status; see the module docstring."""
    lowered = detail.lower()
    if status == 402:
        return "payment_required", True
    if status == 404:
        return "model_not_found", True
    if status == 408:
        return "timeout", True
    if status == 429:
        return "rate_limited", True
    if status >= 500:
        return "upstream_error", True
    if status == 400 and ("not a valid model" in lowered or "model not found" in lowered):
        return "model_not_found", True
    if status == 400 and ("context length" in lowered or "context_length" in lowered):
        return "context_length_exceeded", True
    return NOT_RETRYABLE.get(status, "bad_request"), False


def _upstream_message(response: httpx.Response) -> str:
    try:
        body = loads_exact(response.content)
    except ValueError:
        return clip(response.text.strip())
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return clip(str(error.get("message") or error.get("code") or ""))
    if isinstance(error, str):
        return clip(error)
    return clip(response.text.strip())


def _arguments_text(arguments: Any) -> str:
    if arguments is None:
        return ""
    if isinstance(arguments, str):
        return arguments
    return dumps_exact(arguments)  # Ollama may send an object


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
