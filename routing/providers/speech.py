"""Speech, as providers answer it: OpenAI's `POST /audio/speech`, text in, audio out.

A provider answers a `SpeechRequest` with `SpokenAudio`: a `Completion` whose
`chunks` are the audio's bytes as the provider sends them, to be streamed on to the
caller, and whose `media_type` is the audio's. Speech is priced per character of
input (`Usage.characters`, from the request: no provider reports them). The
upstream's answer is open until its chunks are read or closed; a failure while
reading them is a `ProviderError`.

The offline model speaks silence, with no network: a WAV file (16-bit mono at
24 kHz, made with the standard library's `wave`) about as long as the text would
take to say, at most `OFFLINE_MOST_SECONDS`. It answers `pcm` with the same samples
without the header (OpenAI's pcm is this format) and every other format (mp3, opus,
aac, flac) with the WAV file, labelled `audio/wav`: the offline model encodes no
compressed audio, and says so by its media type rather than mislabel the bytes.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import httpx

from routing.providers.base import Completion, Usage

if TYPE_CHECKING:
    from routing.providers.openai_compat import OpenAICompatibleProvider

MEDIA_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
SAMPLE_RATE = 24_000  # OpenAI's pcm: 24 kHz, 16-bit signed little-endian, mono
CHARACTERS_A_SECOND = 15  # about how fast the text would be read aloud
OFFLINE_MOST_SECONDS = 5
CHUNK_BYTES = 16_384
# An answer the upstream sent whole, its length known and no more than this, is read
# at once and handed on in one piece: all of it is made already, and streamed it would
# cost the caller a step a piece. A longer or chunked answer is streamed as it comes.
WHOLE_BYTES = 65_536


@dataclass(frozen=True)
class SpeechRequest:
    model: str  # the provider's model id
    input: str
    voice: Any  # a voice's name, or `{"id": ...}` for a custom one
    response_format: str = "mp3"
    speed: Decimal | None = None
    # Anything else the caller sent (`instructions`...), passed through as is.
    extra: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        payload = {**self.extra, "model": self.model, "input": self.input, "voice": self.voice}
        payload["response_format"] = self.response_format
        if self.speed is not None:
            payload["speed"] = self.speed
        return payload


@dataclass
class SpokenAudio(Completion):
    """The answer to a speech request: its audio, read as it comes."""

    chunks: Iterator[bytes] = field(default_factory=lambda: iter(()))
    media_type: str = "application/octet-stream"
    # The whole audio instead, when it came in one piece (`WHOLE_BYTES`).
    whole: bytes | None = None
    # Lets go of the upstream's answer, read or not (a generator never started cannot
    # run its own `finally`).
    close: Callable[[], object] = lambda: None


def upstream_speech(provider: OpenAICompatibleProvider, request: SpeechRequest) -> SpokenAudio:
    response = provider.open_stream("/audio/speech", request.body())
    media_type = response.headers.get("content-type", "").split(";")[0].strip()
    if not media_type.startswith("audio/"):
        # An error in a 200 body, or a server that answers something else: no audio.
        response.read()
        response.close()
        body = provider.parse_json(response.content)
        if isinstance(body, dict) and "error" in body:
            raise provider.error_in_answer(body["error"])
        raise provider.failure(
            f"the speech answer is {media_type or 'untyped'}, not audio", code="invalid_response"
        )
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) <= WHOLE_BYTES:
        try:
            # Cut short, it is a failure before any audio left: the next model answers.
            whole = response.read()
        except httpx.HTTPError as exc:
            raise provider.transport_failure(exc) from None
        finally:
            response.close()
        return SpokenAudio(
            usage=Usage(characters=len(request.input)),
            model=request.model,
            whole=whole,
            media_type=media_type,
        )
    return SpokenAudio(
        usage=Usage(characters=len(request.input)),
        model=request.model,
        chunks=_read(provider, response),
        media_type=media_type,
        close=response.close,
    )


def _read(provider: OpenAICompatibleProvider, response: httpx.Response) -> Iterator[bytes]:
    try:
        yield from response.iter_bytes()
    except httpx.HTTPError as exc:
        raise provider.transport_failure(exc) from None
    finally:
        response.close()


def offline_speech(request: SpeechRequest) -> SpokenAudio:
    speed = float(request.speed or 1)
    seconds = min(max(len(request.input) / CHARACTERS_A_SECOND / speed, 0.25), OFFLINE_MOST_SECONDS)
    frames = bytes(2 * int(SAMPLE_RATE * seconds))  # silence
    if request.response_format == "pcm":
        audio, media_type = frames, MEDIA_TYPES["pcm"]
    else:
        audio, media_type = _wav(frames), MEDIA_TYPES["wav"]
    return SpokenAudio(
        usage=Usage(characters=len(request.input), reported_cost=Decimal(0)),
        model=request.model,
        chunks=(audio[i : i + CHUNK_BYTES] for i in range(0, len(audio), CHUNK_BYTES)),
        media_type=media_type,
    )


def _wav(frames: bytes) -> bytes:
    file = io.BytesIO()
    with wave.open(file, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(SAMPLE_RATE)
        writer.writeframes(frames)
    return file.getvalue()
