"""The length of an audio file read from its header (`routing.media`): a plain WAV
file is read without mutagen, and must come out exactly as mutagen reads it; any
other file goes to mutagen."""

from __future__ import annotations

import io
import struct
import wave
from decimal import Decimal

import mutagen
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routing import media
from routing.media import UnreadableMedia, duration_seconds, plain_wave_length
from tests.routing.audio_files import wav


def by_mutagen(data: bytes) -> Decimal | str:
    """What `duration_seconds` answers with mutagen alone: the seconds, or the error."""
    original = media.plain_wave_length
    media.plain_wave_length = lambda data: None
    try:
        return duration_seconds(data)
    except UnreadableMedia as exc:
        return f"refused: {exc}"
    finally:
        media.plain_wave_length = original


def answered(data: bytes) -> Decimal | str:
    try:
        return duration_seconds(data)
    except UnreadableMedia as exc:
        return f"refused: {exc}"


def wave_file(channels: int, width: int, rate: int, frames: int) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as audio:
        audio.setnchannels(channels)
        audio.setsampwidth(width)
        audio.setframerate(rate)
        audio.writeframes(b"\x01" * (channels * width * frames))
    return buffer.getvalue()


def test_a_file_written_by_the_wave_module_is_read_without_mutagen() -> None:
    data = wav("2.5")
    assert plain_wave_length(data) == 2.5
    assert duration_seconds(data) == Decimal("2.500")


@given(
    channels=st.integers(1, 8),
    width=st.integers(1, 4),
    rate=st.integers(1, 384_000),
    frames=st.integers(1, 2_000),
)
@settings(max_examples=200, deadline=None)
def test_files_of_the_wave_module_are_read_as_mutagen_reads_them(
    channels: int, width: int, rate: int, frames: int
) -> None:
    data = wave_file(channels, width, rate, frames)
    assert plain_wave_length(data) is not None
    assert answered(data) == by_mutagen(data)


CHUNK_IDS = [b"fmt ", b"data", b"fact", b"LIST", b"id3 ", b"ID3 ", b"junk", b"fmt\x00", b"da\tta"]


@st.composite
def riff_files(draw: st.DrawFn) -> bytes:
    """RIFF files around a `fmt ` and a `data` chunk: other chunks anywhere, fields and
    sizes that may lie, and a cut anywhere."""
    kinds = [b"fmt ", b"data", *draw(st.lists(st.sampled_from(CHUNK_IDS), max_size=3))]
    chunks = []
    for kind in draw(st.permutations(kinds)):
        if kind == b"fmt " and draw(st.booleans()):
            payload = struct.pack(
                "<HHIIHH",
                draw(st.sampled_from([0, 1, 3, 0xFFFE])),
                draw(st.integers(0, 8)),
                draw(st.one_of(st.integers(0, 400_000), st.integers(0, 2**32 - 1))),
                draw(st.integers(0, 2**32 - 1)),
                draw(st.integers(0, 0xFFFF)),
                draw(st.integers(0, 64)),
            ) + draw(st.binary(max_size=4))
        else:
            payload = draw(st.binary(max_size=40))
        size = draw(st.one_of(st.just(len(payload)), st.integers(0, 2**32 - 1)))
        chunks.append(struct.pack("<4sI", kind, size) + payload + b"\x00" * (len(payload) % 2))
    body = b"WAVE" + b"".join(chunks)
    riff_size = draw(st.one_of(st.just(len(body)), st.integers(0, 2**32 - 1)))
    data = b"RIFF" + struct.pack("<I", riff_size) + body
    return data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data


@given(data=riff_files())
@settings(max_examples=1_000, deadline=None)
def test_any_riff_file_is_answered_as_mutagen_answers_it(data: bytes) -> None:
    assert answered(data) == by_mutagen(data)


@st.composite
def plain_wave_files(draw: st.DrawFn) -> bytes:
    """Plain WAV files of any header fields: the `data` chunk's size may claim more than
    the file holds (a recording cut short: it is the last chunk), a `fact` chunk may
    come before it."""
    fmt = struct.pack(
        "<HHIIHH",
        draw(st.sampled_from([1, 3, 6, 7, 0x55, 0xFFFE])),
        draw(st.integers(1, 8)),
        draw(st.one_of(st.integers(1, 400_000), st.integers(1, 2**32 - 1))),
        draw(st.integers(0, 2**32 - 1)),
        draw(st.integers(1, 0xFFFF)),
        draw(st.sampled_from([8, 16, 24, 32])),
    ) + draw(st.sampled_from([b"", b"\x00\x00"]))
    samples = draw(st.binary(max_size=64))
    size = draw(st.one_of(st.just(len(samples)), st.integers(len(samples), 2**32 - 1)))
    chunks = [
        struct.pack("<4sI", b"fmt ", len(fmt)) + fmt,
        struct.pack("<4sI", b"data", size) + samples + b"\x00" * (len(samples) % 2),
    ]
    if draw(st.booleans()):
        chunks.insert(draw(st.integers(0, 1)), struct.pack("<4sII", b"fact", 4, len(samples)))
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


@given(data=plain_wave_files())
@settings(max_examples=500, deadline=None)
def test_a_plain_wave_file_is_read_without_mutagen_to_mutagens_length_exactly(
    data: bytes,
) -> None:
    length = plain_wave_length(data)
    assert length is not None
    assert mutagen.File(io.BytesIO(data)).info.length == length
    assert answered(data) == by_mutagen(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"RIFF",
        b"not audio at all, just text",
        wav("1")[:30],  # cut inside the fmt chunk
        wav("1").replace(b"WAVE", b"AVI "),
    ],
)
def test_what_is_no_plain_wave_file_goes_to_mutagen(data: bytes) -> None:
    assert plain_wave_length(data) is None
    assert answered(data) == by_mutagen(data)


def test_a_wave_file_with_another_chunk_goes_to_mutagen_and_is_still_measured() -> None:
    data = wav("1")
    listed = b"LIST" + struct.pack("<I", 12) + b"INFOISFT" + struct.pack("<I", 0)
    body = data[12:] + listed
    tagged = b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body
    assert plain_wave_length(tagged) is None
    assert duration_seconds(tagged) == Decimal("1.000")
