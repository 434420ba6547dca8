"""How long an audio or video file is, from its header: what a transcription or a chat
with an audio or video part is reserved (and priced) by, before the call.

`mutagen` reads the header of WAV, MP3, FLAC, Ogg (Vorbis, Opus), MP4/M4A, AAC, AIFF
and others without decoding the sound, so a file of any size is measured in
microseconds. A file it cannot read is not audio (or video) the gateway can measure,
and is refused before anything is reserved.

A plain WAV file (what most recorders and the `wave` module write: a RIFF header, a
`fmt ` chunk, a `data` chunk, perhaps a `fact`) is read here without mutagen: mutagen
scores every format it knows against the header and opens the file through its
generic chunk classes, about 80 µs a file, a third of what a transcription request
costs before its call (measured with `manage.py bench_gateway --endpoint
transcriptions`). The length is mutagen's arithmetic on the same fields, and any file
off that plain shape (another chunk, a chunk past the file's end, an ID3 tag) goes to
mutagen; tests/routing/test_media_durations.py proves the two agree.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import struct
from decimal import ROUND_CEILING, Decimal

import mutagen

MILLISECOND = Decimal("0.001")
_DATA_URL = re.compile(r"data:(?P<type>[\w.+/-]*)(?:;[\w=.+-]+)*;base64,", re.ASCII)


class UnreadableMedia(ValueError):
    """Not a file whose duration could be read from its header."""


def duration_seconds(data: bytes) -> Decimal:
    """The file's duration in seconds, rounded up to the millisecond."""
    length: object = plain_wave_length(data)
    if length is None:
        length = _mutagen_length(data)
    if not isinstance(length, int | float) or length <= 0 or length != length:
        raise UnreadableMedia("it is not an audio or video file of a known format")
    return Decimal(repr(float(length))).quantize(MILLISECOND, rounding=ROUND_CEILING)


def _mutagen_length(data: bytes) -> object:
    try:
        info = mutagen.File(io.BytesIO(data))
    except mutagen.MutagenError as exc:
        raise UnreadableMedia(f"its header cannot be read ({exc})") from None
    return getattr(getattr(info, "info", None), "length", None)


# The chunks of a plain WAV file: mutagen reads nothing else from them than their
# place (`fmt ` and `data`), so their reading here cannot differ from its.
_PLAIN_WAVE_CHUNKS = frozenset({b"fmt ", b"data", b"fact"})
_RIFF_HEADER = struct.Struct("<4sI4s")
_CHUNK_HEADER = struct.Struct("<4sI")
_WAVE_FORMAT = struct.Struct("<HHIIHH")


def plain_wave_length(data: bytes) -> float | None:
    """The length in seconds of a plain WAV file as mutagen computes it (samples, the
    `data` chunk's size over the block's, over the sample rate), or None when `data`
    is not a plain WAV file (mutagen then decides)."""
    if len(data) < _RIFF_HEADER.size:
        return None
    riff, riff_size, form = _RIFF_HEADER.unpack_from(data)
    if riff != b"RIFF" or form != b"WAVE":
        return None
    end = 8 + riff_size + riff_size % 2  # mutagen reads chunks up to here
    offset = _RIFF_HEADER.size
    found: dict[bytes, tuple[int, int]] = {}
    while offset < end:
        if offset + _CHUNK_HEADER.size > len(data):
            return None
        kind, size = _CHUNK_HEADER.unpack_from(data, offset)
        if kind not in _PLAIN_WAVE_CHUNKS:
            return None
        found.setdefault(kind, (offset + _CHUNK_HEADER.size, size))
        offset += _CHUNK_HEADER.size + size + size % 2
    if b"fmt " not in found or b"data" not in found:
        return None
    at, size = found[b"fmt "]
    if size < _WAVE_FORMAT.size or at + size > len(data):
        return None
    _format, _channels, sample_rate, _byte_rate, block_align, _bits = _WAVE_FORMAT.unpack_from(
        data, at
    )
    if block_align <= 0 or sample_rate <= 0:
        return None
    return found[b"data"][1] / block_align / sample_rate


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
