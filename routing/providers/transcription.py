"""What a transcription is to a provider: the audio and the caller's choices in, a
`Transcript` out, whichever provider made it.

A provider that speaks OpenAI's `/audio/transcriptions` gets the upload as the caller
sent it (`upload_body`) and its answer is handed back as it is, in the format the
caller asked for (`upstream_transcript`): the gateway adds nothing an OpenAI client
could notice. Deepgram's answer (`routing.providers.deepgram`) and the offline
model's (`offline_transcript`) are a text with segments and words, which
`routing.transcription_formats` writes in the asked format. `Transcript.seconds` is
the audio's length as the provider reported it, what the call is priced at; without
it, the length read from the file's header is.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx

from controlplane.money import loads_exact

RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
TIMESTAMP_GRANULARITIES = ("segment", "word")


@dataclass(frozen=True)
class TranscriptionRequest:
    model: str  # the provider's model id
    audio: bytes
    filename: str
    content_type: str  # of the file, as the caller sent it
    seconds: Decimal  # the audio's length, read from its header
    response_format: str = "json"
    language: str = ""
    prompt: str = ""
    temperature: str = ""  # as sent (checked to be a number from 0 to 1)
    timestamp_granularities: tuple[str, ...] = ()
    # Other form fields the caller sent, passed on to an OpenAI-compatible upstream.
    extra: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Segment:
    start: Decimal
    end: Decimal
    text: str


@dataclass(frozen=True)
class Word:
    word: str
    start: Decimal
    end: Decimal


@dataclass
class Transcript:
    text: str
    language: str = ""
    seconds: Decimal | None = None  # the audio's length as the provider reported it
    segments: list[Segment] = field(default_factory=list)
    words: list[Word] = field(default_factory=list)
    # The upstream's answer, already in the asked format, passed through as it is.
    answer: bytes | None = None
    answer_type: str = ""


def upload_body(request: TranscriptionRequest, boundary: str = "") -> tuple[bytes, str]:
    """The multipart body (and its Content-Type) of OpenAI's `/audio/transcriptions`:
    each field the caller sent, then the file, byte for byte as httpx encodes a form
    (`data=`, `files=`) and under a random boundary as it does.

    Written out here rather than by httpx because httpx's encoder builds an object a
    field and goes through the form twice (its length, then its bytes): about 60 µs
    on a transcription's hot path, against a few here. A property test
    (tests/routing/test_transcription_uploads.py) holds the two to the same bytes."""
    fields = [("model", request.model), ("response_format", request.response_format)]
    fields += [
        (name, getattr(request, name))
        for name in ("language", "prompt", "temperature")
        if getattr(request, name)
    ]
    fields += [("timestamp_granularities[]", value) for value in request.timestamp_granularities]
    named = {name for name, _ in fields}
    fields += [(name, value) for name, value in request.extra if name not in named]
    boundary = boundary or os.urandom(16).hex()
    opening = f"--{boundary}\r\nContent-Disposition: form-data; "
    parts = [
        f"{opening}{_form_param('name', name)}\r\n\r\n{value}\r\n".encode()
        for name, value in fields
    ]
    filename = f"; {_form_param('filename', request.filename)}" if request.filename else ""
    parts += [
        f"{opening}{_form_param('name', 'file')}{filename}\r\n"
        f"Content-Type: {request.content_type}\r\n\r\n".encode(),
        request.audio,
        f"\r\n--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


# How a form field's name (or a file's name) is quoted in its part's header, as
# httpx and browsers do (HTML5): quotes and control characters percent-encoded.
_FORM_PARAM_ESCAPES = {'"': "%22", "\\": "\\\\"} | {
    chr(code): f"%{code:02X}" for code in range(0x20) if code != 0x1B
}
_FORM_PARAM_ESCAPED = re.compile("|".join(map(re.escape, _FORM_PARAM_ESCAPES)))


def _form_param(name: str, value: str) -> str:
    return f'{name}="{_FORM_PARAM_ESCAPED.sub(lambda m: _FORM_PARAM_ESCAPES[m[0]], value)}"'


class UnreadableTranscript(ValueError):
    """An upstream answer that is not a transcription in the asked format."""


def upstream_transcription(client: Any, request: TranscriptionRequest) -> Transcript:
    """An OpenAI-compatible upstream's transcription (`client`, an
    `OpenAICompatibleProvider`): the upload as the caller sent it, the answer passed
    through (`upstream_transcript`)."""
    body, content_type = upload_body(request)
    response = client.post("/audio/transcriptions", body, {"Content-Type": content_type})
    try:
        return upstream_transcript(response, request)
    except UnreadableTranscript as exc:
        raise client.failure(str(exc), code="invalid_response") from None


def upstream_transcript(response: httpx.Response, request: TranscriptionRequest) -> Transcript:
    """An OpenAI-compatible upstream's answer, passed through; its reported length is
    `duration` (verbose_json) or a `usage` of type duration (json)."""
    content_type = response.headers.get("content-type", "")
    if request.response_format not in ("json", "verbose_json"):
        return Transcript(
            response.text, answer=response.content, answer_type=content_type or "text/plain"
        )
    try:
        body = loads_exact(response.content)
    except (ValueError, RecursionError):
        raise UnreadableTranscript(f"the answer is not JSON: {response.content[:80]!r}") from None
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        raise UnreadableTranscript("the answer has no transcript text")
    usage = body["usage"] if isinstance(body.get("usage"), dict) else {}
    reported = body.get("duration")
    if reported is None and usage.get("type") == "duration":
        reported = usage.get("seconds")
    return Transcript(
        body["text"],
        language=str(body.get("language") or ""),
        seconds=seconds_of(reported),
        answer=response.content,
        answer_type="application/json",
    )


def seconds_of(value: Any) -> Decimal | None:
    """A reported length of audio in seconds; None when it is no such number."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | float | str):
        return None
    try:
        seconds = Decimal(str(value))
    except ArithmeticError:
        return None
    return seconds if seconds.is_finite() and seconds > 0 else None


def offline_transcript(request: TranscriptionRequest) -> Transcript:
    """The offline model's transcript: made from the file's name and length, the same
    for the same file, with no network. Its sentences are its segments, spread over
    the audio by their share of the words; the words are spread evenly within them."""
    name = " ".join(request.filename.split()) or "the audio"
    length = f"{request.seconds.normalize():f}"
    sentences = [
        f"Transcript of {name}, {length} seconds of audio.",
        "The offline model hears no speech; route the operation to a real provider "
        "for real transcripts.",
    ]
    counts = [len(sentence.split()) for sentence in sentences]
    per_word = request.seconds / sum(counts)
    segments: list[Segment] = []
    words: list[Word] = []
    start = Decimal(0)
    for sentence, count in zip(sentences, counts, strict=True):
        for number, word in enumerate(sentence.split()):
            words.append(
                Word(word, _ms(start + number * per_word), _ms(start + (number + 1) * per_word))
            )
        end = request.seconds if sentence is sentences[-1] else _ms(start + count * per_word)
        segments.append(Segment(_ms(start), end, sentence))
        start = end
    return Transcript(
        " ".join(sentences),
        language=request.language or "en",
        seconds=request.seconds,
        segments=segments,
        words=words,
    )


def _ms(seconds: Decimal) -> Decimal:
    return seconds.quantize(Decimal("0.001"))
