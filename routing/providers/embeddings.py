"""Embeddings, as providers answer them: OpenAI's `POST /embeddings`.

An `EmbeddingRequest` is what the gateway checked (`routing.embedding_requests`); a
provider answers it with a `Completion` whose `raw` is OpenAI's body (`object: list`,
`data` of `embedding` objects, `usage.prompt_tokens`) and whose usage is priced at the
model's prompt price.

Every answer is handed back in the encoding the caller asked for: OpenAI's `base64`
is the vector's little-endian float32 bytes (what the `openai` package asks for by
default, and decodes), `float` a list of numbers. A server that ignores
`encoding_format` (some compatible ones do) is converted, so the caller always gets
what it asked for.

The offline model embeds with no network: a vector of `OFFLINE_DIMENSIONS` numbers
(or the `dimensions` asked) drawn from a SHAKE-256 hash of the input, normalised to
length one, so the same text always gets the same vector and cosine similarity of a
text with itself is one.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from controlplane.money import JsonText
from routing.providers.base import Completion, ProviderError, Usage

if TYPE_CHECKING:
    from routing.providers.openai_compat import OpenAICompatibleProvider

# Small enough for a demo's vector store and fast to draw in pure Python, large enough
# for similarity to mean something. Ask `dimensions` for another size.
OFFLINE_DIMENSIONS = 256

EmbeddingInput = str | list[int]


@dataclass(frozen=True)
class EmbeddingRequest:
    model: str  # the provider's model id
    input: Any  # as sent: a string, a list of strings, a token array or a list of them
    inputs: Sequence[EmbeddingInput]  # the same, always as a list of inputs
    prompt_tokens: int  # estimated from the inputs, for routing and the reservation
    dimensions: int | None = None
    encoding_format: str = "float"
    # Anything else the caller sent (`user`...), passed through as is.
    extra: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        payload = {**self.extra, "model": self.model, "input": self.input}
        payload["encoding_format"] = self.encoding_format
        if self.dimensions is not None:
            payload["dimensions"] = self.dimensions
        return payload


def upstream_embeddings(
    provider: OpenAICompatibleProvider, request: EmbeddingRequest
) -> Completion:
    # The vectors' numbers are handed on, never reckoned with: read and written back
    # as their text (`JsonText`), which costs a fraction of Decimals or floats.
    body = provider.post_json("/embeddings", request.body(), numbers=JsonText)
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise provider.failure("the embeddings answer has no `data` list", code="invalid_response")
    data = [_encoded(item, request.encoding_format, provider.label) for item in body["data"]]
    usage = Usage.from_openai(body.get("usage"))
    if not usage.prompt_tokens and "prompt_tokens" not in usage.unreadable:
        # Not reported: priced at the estimate rather than at nothing.
        usage.prompt_tokens = request.prompt_tokens
    return Completion(
        usage=usage, model=str(body.get("model") or request.model), raw={**body, "data": data}
    )


def offline_embeddings(request: EmbeddingRequest) -> Completion:
    dimensions = request.dimensions or OFFLINE_DIMENSIONS
    data = []
    for index, item in enumerate(request.inputs):
        vector = _as(_offline_vector(item, dimensions), request.encoding_format)
        data.append({"object": "embedding", "index": index, "embedding": vector})
    usage = Usage(prompt_tokens=request.prompt_tokens, reported_cost=Decimal(0))
    return Completion(
        usage=usage,
        model=request.model,
        raw={
            "object": "list",
            "data": data,
            "model": request.model,
            "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens},
        },
    )


def _offline_vector(item: EmbeddingInput, dimensions: int) -> bytes:
    """The input's vector as little-endian float32 bytes: signed 16-bit draws from the
    hash of the text (or token ids), scaled to length one."""
    text = item if isinstance(item, str) else " ".join(map(str, item))
    drawn = hashlib.shake_256(f"{dimensions}:{text}".encode()).digest(2 * dimensions)
    numbers = struct.unpack(f"<{dimensions}h", drawn)
    length = math.sqrt(sum(n * n for n in numbers)) or 1.0
    return struct.pack(f"<{dimensions}f", *(n / length for n in numbers))


def _as(packed: bytes, encoding_format: str) -> str | list[float]:
    if encoding_format == "base64":
        return base64.b64encode(packed).decode()
    return list(struct.unpack(f"<{len(packed) // 4}f", packed))


def _encoded(item: Any, encoding_format: str, label: str) -> dict[str, Any]:
    """An answer's embedding object, its vector in the encoding the caller asked for:
    as the provider wrote it when that is the encoding (checked: base64 of whole
    float32s, or a list of numbers), else converted."""
    vector = item.get("embedding") if isinstance(item, dict) else None
    try:
        if isinstance(vector, str):
            packed = base64.b64decode(vector, validate=True)
            if len(packed) % 4:
                raise ValueError("not a whole number of float32")
        elif isinstance(vector, list):
            kinds = set(map(type, vector))
            if not kinds <= NUMBERS:
                raise ValueError("not a list of numbers")
            if encoding_format == "float":
                # Written back in one piece, each number's text as read.
                texts = vector if int not in kinds else map(str, vector)
                return {**item, "embedding": JsonText(f"[{','.join(texts)}]")}
            packed = struct.pack(f"<{len(vector)}f", *map(float, vector))
        else:
            raise ValueError("no embedding")
    except (ValueError, TypeError, OverflowError, struct.error) as exc:
        raise ProviderError(
            f"{label}: an embedding in the answer is unreadable ({exc})",
            code="invalid_response",
            retryable=True,
        ) from None
    if encoding_format == "base64" and isinstance(vector, str):
        return dict(item)  # as the provider wrote it
    assert isinstance(item, dict)
    return {**item, "embedding": _as(packed, encoding_format)}


# What a vector of `float` numbers holds, read as `JsonText`: its numbers with a
# fraction or exponent, and its whole ones.
NUMBERS = {JsonText, int}
