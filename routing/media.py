"""How long an audio or video file is, from its header: what a transcription or a chat
with an audio or video part is reserved (and priced) by, before the call.

`mutagen` reads the header of WAV, MP3, FLAC, Ogg (Vorbis, Opus), MP4/M4A, AAC, AIFF
and others without decoding the sound, so a file of any size is measured in
microseconds. A file it cannot read is not audio (or video) the gateway can measure,
and is refused before anything is reserved.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from decimal import ROUND_CEILING, Decimal

import mutagen

MILLISECOND = Decimal("0.001")
_DATA_URL = re.compile(r"data:(?P<type>[\w.+/-]*)(?:;[\w=.+-]+)*;base64,", re.ASCII)


class UnreadableMedia(ValueError):
    """Not a file whose duration could be read from its header."""


def duration_seconds(data: bytes) -> Decimal:
    """The file's duration in seconds, rounded up to the millisecond."""
    try:
        info = mutagen.File(io.BytesIO(data))
    except mutagen.MutagenError as exc:
        raise UnreadableMedia(f"its header cannot be read ({exc})") from None
    length = getattr(getattr(info, "info", None), "length", None)
    if not isinstance(length, int | float) or length <= 0 or length != length:
        raise UnreadableMedia("it is not an audio or video file of a known format")
    return Decimal(repr(float(length))).quantize(MILLISECOND, rounding=ROUND_CEILING)


def decode_base64(text: str) -> bytes:
    """The bytes of base64 text, bare or as a data URL (`data:audio/wav;base64,...`)."""
    match = _DATA_URL.match(text)
    if match is not None:
        text = text[match.end() :]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise UnreadableMedia("it is not valid base64") from None


def is_data_url(text: str) -> bool:
    return _DATA_URL.match(text) is not None
