"""Deepgram's speech to text (`POST {base_url}/v1/listen`), for transcriptions.

The audio's bytes are the body, its type the Content-Type; the model, the language
(else `detect_language`), punctuation and utterances are query parameters; the key
goes as `Authorization: Token <key>`. The answer is normalised to a `Transcript`:
the first channel's first alternative's transcript and words (punctuated when
Deepgram punctuated them), its utterances as segments (else its paragraphs'
sentences, else the whole transcript as one), the detected language, and
`metadata.duration` as the audio's length the call is priced at. The caller's
`prompt` and `temperature` have no Deepgram counterpart and are not sent.

Deepgram serves no chat: a chat (or a stream) asked of it is refused with a
non-retryable `ProviderError` before anything is sent.

Failures, as `ProviderError` (retryable: another model may succeed):

=========================================  =====================  =========
HTTP status                                code                   retryable
=========================================  =====================  =========
400 naming no such model (or language)     model_not_found        yes
400, 413, 415, other 4xx                   bad_request            no
401                                        unauthorized           no
403                                        forbidden              no
402                                        payment_required       yes
404                                        model_not_found        yes
408, timeouts                              timeout                yes
429                                        rate_limited           yes, `retry_after`
5xx                                        upstream_error         yes
connection refused or dropped              connection_failed/...  yes
a 200 that is not a transcription          invalid_response       yes
=========================================  =====================  =========

Errors come as `{"err_code", "err_msg"}` (or `{"category", "message"}`); the key is
never in an error message or this object's repr.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any, NoReturn

import httpx

from controlplane.money import loads_exact
from routing.providers.base import ChatRequest, Completion, ProviderError, StreamChunk
from routing.providers.transcription import (
    Segment,
    Transcript,
    TranscriptionRequest,
    Word,
    seconds_of,
)
from routing.providers.upstream_http import UpstreamClient, clip, retry_after_seconds

DEFAULT_BASE_URL = "https://api.deepgram.com"
NOT_RETRYABLE = {401: "unauthorized", 403: "forbidden"}


class DeepgramProvider(UpstreamClient):
    """A client for one Deepgram base URL and key; one `httpx.Client` (a connection
    pool), so `provider_for()` reuses instances."""

    def __init__(
        self, base_url: str, api_key: str = "", *, timeout: float = 60.0, label: str = "deepgram"
    ) -> None:
        headers = {"Authorization": f"Token {api_key}"} if api_key else {}
        base_url = (base_url or DEFAULT_BASE_URL).rstrip("/").removesuffix("/v1")
        super().__init__(base_url, api_key, timeout=timeout, label=label, headers=headers)
        self.url = f"{base_url}/v1/listen"

    def complete(self, request: ChatRequest) -> Completion:
        self._refuse_chat()

    def stream(self, request: ChatRequest) -> Iterator[StreamChunk | Completion]:
        self._refuse_chat()

    def _refuse_chat(self) -> NoReturn:
        raise ProviderError(
            f"{self.label}: Deepgram transcribes audio only; route chat calls to another provider.",
            retryable=False,
            code="unsupported_call",
        )

    def transcribe(self, request: TranscriptionRequest) -> Transcript:
        params = {"model": request.model, "punctuate": "true", "utterances": "true"}
        if request.language:
            params["language"] = request.language
        else:
            params["detect_language"] = "true"
        content_type = request.content_type or "application/octet-stream"
        try:
            response = self._client.post(
                self.url,
                params=params,
                content=request.audio,
                headers={"Content-Type": content_type},
            )
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        if response.status_code >= 400:
            raise self._status_error(response)
        try:
            body = loads_exact(response.content)
        except (ValueError, RecursionError):
            body = None
        transcript = _transcript(body, request)
        if transcript is None:
            snippet = response.content[:80]
            raise self._error(
                f"the answer is not a transcription: {snippet!r}", code="invalid_response"
            )
        return transcript

    # -- failures ------------------------------------------------------------------

    def _status_error(self, response: httpx.Response) -> ProviderError:
        status = response.status_code
        detail = _error_message(response)
        lowered = detail.lower()
        retry_after = None
        if status == 400 and ("no such model" in lowered or "model not found" in lowered):
            code, retryable = "model_not_found", True
        elif status in (402, 404, 408, 429) or status >= 500:
            code = {402: "payment_required", 404: "model_not_found", 408: "timeout"}.get(
                status, "rate_limited" if status == 429 else "upstream_error"
            )
            retryable = True
            retry_after = retry_after_seconds(response.headers) if status == 429 else None
        else:
            code, retryable = NOT_RETRYABLE.get(status, "bad_request"), False
        text = f"HTTP {status} {response.reason_phrase}" + (f": {detail}" if detail else "")
        return self._error(
            text, code=code, status=status, retryable=retryable, retry_after=retry_after
        )


def _transcript(body: Any, request: TranscriptionRequest) -> Transcript | None:
    """Deepgram's answer as a `Transcript`; None when it is not one."""
    results = body.get("results") if isinstance(body, dict) else None
    channels = results.get("channels") if isinstance(results, dict) else None
    channel = channels[0] if isinstance(channels, list) and channels else None
    alternatives = channel.get("alternatives") if isinstance(channel, dict) else None
    best = alternatives[0] if isinstance(alternatives, list) and alternatives else None
    if not isinstance(best, dict) or not isinstance(best.get("transcript"), str):
        return None
    assert isinstance(results, dict)
    assert isinstance(channel, dict)
    metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    words = [
        Word(str(word.get("punctuated_word") or word.get("word") or ""), start, end)
        for word in _objects(best.get("words"))
        if (start := _time(word.get("start"))) is not None
        and (end := _time(word.get("end"))) is not None
    ]
    return Transcript(
        best["transcript"],
        language=str(channel.get("detected_language") or request.language or ""),
        seconds=seconds_of(metadata.get("duration")),
        segments=_segments(results, best),
        words=words,
    )


def _segments(results: dict[str, Any], best: dict[str, Any]) -> list[Segment]:
    """Utterances, else the paragraphs' sentences, else the transcript as one."""
    for timed in (
        [
            (u.get("start"), u.get("end"), u.get("transcript"))
            for u in _objects(results.get("utterances"))
        ],
        [
            (s.get("start"), s.get("end"), s.get("text"))
            for paragraph in _objects((best.get("paragraphs") or {}).get("paragraphs"))
            for s in _objects(paragraph.get("sentences"))
        ],
    ):
        segments = [
            Segment(start, end, str(text))
            for raw_start, raw_end, text in timed
            if (start := _time(raw_start)) is not None
            and (end := _time(raw_end)) is not None
            and isinstance(text, str)
        ]
        if segments:
            return segments
    words = _objects(best.get("words"))
    if not best["transcript"]:
        return []
    start = _time(words[0].get("start")) if words else None
    end = _time(words[-1].get("end")) if words else None
    return [Segment(start or Decimal(0), end or start or Decimal(0), best["transcript"])]


def _objects(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _time(value: Any) -> Decimal | None:
    """A timestamp in seconds; None when it is no number at or after zero."""
    if value == 0 and not isinstance(value, bool):
        return Decimal(0)
    return seconds_of(value)


def _error_message(response: httpx.Response) -> str:
    try:
        body = loads_exact(response.content)
    except (ValueError, RecursionError):
        body = None
    if isinstance(body, dict):
        parts = [body.get(name) for name in ("err_code", "category", "err_msg", "message")]
        text = ": ".join(str(part) for part in parts if part)
    else:
        text = response.text.strip()
    return clip(text)
