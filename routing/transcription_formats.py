"""A transcript written in the `response_format` the caller asked for, as OpenAI's
`/v1/audio/transcriptions` writes it:

- `json`: `{"text", "usage": {"type": "duration", "seconds"}}`;
- `text`: the text and a newline, as text/plain;
- `verbose_json`: the task, language, duration and text, with the segments (unless
  only words were asked for) and the words (when `timestamp_granularities[]` has
  `word`); a segment carries Whisper's fields, those no provider here reports at zero;
- `srt` and `vtt`: one numbered (SubRip) or timed (WebVTT) cue per segment.

An OpenAI-compatible upstream's answer is already in the asked format and is passed
through as it is.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from controlplane.money import dumps_exact
from routing.providers.transcription import Transcript, TranscriptionRequest

TEXT_TYPE = "text/plain; charset=utf-8"


def rendered(
    transcript: Transcript, request: TranscriptionRequest, seconds: Decimal
) -> tuple[bytes, str]:
    """The answer's body and Content-Type; `seconds` is the audio's length as priced."""
    if transcript.answer is not None:
        return transcript.answer, transcript.answer_type
    match request.response_format:
        case "text":
            return f"{transcript.text}\n".encode(), TEXT_TYPE
        case "srt":
            return _srt(transcript).encode(), TEXT_TYPE
        case "vtt":
            return _vtt(transcript).encode(), TEXT_TYPE
        case "verbose_json":
            body = _verbose(transcript, request, seconds)
        case _:
            body = {"text": transcript.text, "usage": _usage(seconds)}
    return dumps_exact(body).encode(), "application/json"


def _usage(seconds: Decimal) -> dict[str, Any]:
    return {"type": "duration", "seconds": math.ceil(seconds)}


def _verbose(
    transcript: Transcript, request: TranscriptionRequest, seconds: Decimal
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": transcript.language or request.language,
        "duration": seconds,
        "text": transcript.text,
    }
    granularities = request.timestamp_granularities or ("segment",)
    if "segment" in granularities:
        body["segments"] = [
            {
                "id": number,
                "seek": 0,
                "start": segment.start,
                "end": segment.end,
                "text": segment.text,
                "tokens": [],
                "temperature": Decimal(request.temperature or 0),
                "avg_logprob": 0,
                "compression_ratio": 0,
                "no_speech_prob": 0,
            }
            for number, segment in enumerate(transcript.segments)
        ]
    if "word" in granularities:
        body["words"] = [
            {"word": word.word, "start": word.start, "end": word.end} for word in transcript.words
        ]
    body["usage"] = _usage(seconds)
    return body


def _srt(transcript: Transcript) -> str:
    return "".join(
        f"{number}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n"
        f"{_cue_text(s.text)}\n\n"
        for number, s in enumerate(transcript.segments, start=1)
    )


def _vtt(transcript: Transcript) -> str:
    return "WEBVTT\n\n" + "".join(
        f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{_cue_text(s.text)}\n\n"
        for s in transcript.segments
    )


def _timestamp(seconds: Decimal, separator: str) -> str:
    """`HH:MM:SS,mmm` (SubRip) or `HH:MM:SS.mmm` (WebVTT)."""
    milliseconds = int(seconds * 1000)
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole:02d}{separator}{millis:03d}"


def _cue_text(text: str) -> str:
    """A cue's text on its lines: a blank line would end the cue, an arrow start one."""
    lines = [line.strip() for line in text.strip().splitlines()]
    return "\n".join(line.replace("-->", "->") for line in lines if line) or "…"
