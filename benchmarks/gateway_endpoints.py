"""The gateway's endpoints as `bin/manage bench_gateway --endpoint` sends them: each
one's request, the operation (and so the route and model of its kind) it is sent as,
and the path the bench upstream answers the same request at directly.

Chat, the Responses API and Anthropic's Messages API share the chat model and route
(the gateway turns the last two into a chat call upstream); embeddings, speech and
transcription each have a model of their kind, priced by their unit, and a route.
"""

from __future__ import annotations

import io
import json
import wave
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from benchmarks.upstream import (
    EMBEDDING_MODEL,
    SPEECH_MODEL,
    TRANSCRIPTION_MODEL,
    UPSTREAM_MODEL,
)
from routing.models.catalog import CallKind

OPERATION = "bench"


@dataclass(frozen=True)
class Endpoint:
    name: str
    path: str  # under the gateway's /v1 and the upstream's base URL alike
    operation: str
    body: bytes
    content_type: str
    # The catalog model the endpoint's route sends to: its id, kind and prices.
    model_id: str = UPSTREAM_MODEL
    kind: str = CallKind.CHAT
    prices: dict[str, Decimal] = field(default_factory=dict)

    def headers(self) -> dict[str, str]:
        return {"Content-Type": self.content_type}


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


def one_second_of_silence() -> bytes:
    """A WAV file: one second of 16 kHz mono silence (what a transcription uploads)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(16_000)
        audio.writeframes(b"\x00\x00" * 16_000)
    return buffer.getvalue()


BOUNDARY = "bench-boundary"


def _multipart(fields: dict[str, str], filename: str, data: bytes, mime: str) -> bytes:
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: {mime}\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


CHAT_PRICES = {"price_prompt": Decimal("0.0000001"), "price_completion": Decimal("0.0000004")}

ENDPOINTS: dict[str, Endpoint] = {
    endpoint.name: endpoint
    for endpoint in (
        Endpoint(
            "chat",
            "/chat/completions",
            OPERATION,
            _json(
                {
                    "model": UPSTREAM_MODEL,
                    "messages": [{"role": "user", "content": "Say ok."}],
                    "max_tokens": 16,
                }
            ),
            "application/json",
            prices=CHAT_PRICES,
        ),
        Endpoint(
            "responses",
            "/responses",
            OPERATION,
            _json({"model": UPSTREAM_MODEL, "input": "Say ok.", "max_output_tokens": 16}),
            "application/json",
            prices=CHAT_PRICES,
        ),
        Endpoint(
            "messages",
            "/messages",
            OPERATION,
            _json(
                {
                    "model": UPSTREAM_MODEL,
                    "max_tokens": 16,
                    "messages": [{"role": "user", "content": "Say ok."}],
                }
            ),
            "application/json",
            prices=CHAT_PRICES,
        ),
        Endpoint(
            "embeddings",
            "/embeddings",
            f"{OPERATION}-embeddings",
            _json({"model": EMBEDDING_MODEL, "input": "Say ok.", "encoding_format": "float"}),
            "application/json",
            model_id=EMBEDDING_MODEL,
            kind=CallKind.EMBEDDING,
            prices={"price_prompt": Decimal("0.00000002")},
        ),
        Endpoint(
            "speech",
            "/audio/speech",
            f"{OPERATION}-speech",
            _json({"model": SPEECH_MODEL, "input": "Say ok.", "voice": "alloy"}),
            "application/json",
            model_id=SPEECH_MODEL,
            kind=CallKind.SPEECH,
            prices={"price_character": Decimal("0.000015")},
        ),
        Endpoint(
            "transcriptions",
            "/audio/transcriptions",
            f"{OPERATION}-transcriptions",
            _multipart(
                {"model": TRANSCRIPTION_MODEL}, "silence.wav", one_second_of_silence(), "audio/wav"
            ),
            f"multipart/form-data; boundary={BOUNDARY}",
            model_id=TRANSCRIPTION_MODEL,
            kind=CallKind.TRANSCRIPTION,
            prices={"price_audio_second": Decimal("0.0001")},
        ),
    )
}


def chat_as_large_as(endpoint: Endpoint) -> Endpoint:
    """Chat whose request is as large as `endpoint`'s (its message padded out): what
    chat adds for as many bytes. A 32 KB upload costs any endpoint more than chat's
    70-byte request (received, parsed and sent on again), so the plain comparison
    mixes what an endpoint does with how large its request is."""
    chat = ENDPOINTS["chat"]
    padding = max(len(endpoint.body) - len(chat.body), 0)
    body = json.loads(chat.body)
    body["messages"][0]["content"] += " " + "x" * max(padding - 1, 0)
    return replace(chat, name=f"chat as large as {endpoint.name}", body=_json(body))


def chat_again() -> Endpoint:
    """Chat a second time, under another name (`--control`): the same requests, in the
    same turns. How far it reads from chat is how far two endpoints that cost the
    same read apart in one run: the comparison's resolution, seen rather than argued."""
    return replace(ENDPOINTS["chat"], name=CONTROL)


CONTROL = "chat again"
