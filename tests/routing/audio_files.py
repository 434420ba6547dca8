"""Audio files for the transcription tests, made with the standard library's `wave`:
silence of a given length, whose header `mutagen` reads as that many seconds."""

from __future__ import annotations

import io
import wave
from decimal import Decimal

RATE = 8000


def wav(seconds: Decimal | str | float, *, rate: int = RATE) -> bytes:
    """A mono 16-bit WAV of silence lasting `seconds` (to the frame)."""
    frames = int(Decimal(str(seconds)) * rate)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(rate)
        audio.writeframes(b"\x00\x00" * frames)
    return buffer.getvalue()
