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
import json
import math
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from json.scanner import make_scanner
from typing import TYPE_CHECKING, Any, cast

import orjson

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
    # The vectors' numbers are handed on, never reckoned with: each vector is kept as
    # the text it was written in (`read_answer`), else each number is (`JsonText`).
    body = provider.post_json("/embeddings", request.body(), numbers=JsonText, read=read_answer)
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
        if isinstance(vector, VectorText):
            if encoding_format == "float":
                return dict(item)  # as the provider wrote it (`read_answer` checked it)
            numbers = json.loads(vector)
            packed = struct.pack(f"<{len(numbers)}f", *numbers)
        elif isinstance(vector, str):
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
    if encoding_format == "base64" and not isinstance(vector, VectorText | list):
        return dict(item)  # base64, as the provider wrote it
    assert isinstance(item, dict)
    return {**item, "embedding": _as(packed, encoding_format)}


# What a vector of `float` numbers holds, read as `JsonText`: its numbers with a
# fraction or exponent, and its whole ones.
NUMBERS = {JsonText, int}


class VectorText(JsonText):
    """An embedding's vector as the provider wrote it, checked to be a list of numbers
    and without its whitespace: handed on as it is when the caller asked for floats."""

    __slots__ = ()


def read_answer(content: bytes) -> dict[str, Any] | None:
    """An embeddings answer as `UpstreamClient._parse(content, JsonText)` reads it, but
    with each `data[i].embedding` that is a list of numbers kept whole as its text
    (`VectorText`); None for anything off the plain shape of such an answer (not an
    object, a key with an escape in it...), which the full parse then reads or refuses.

    A vector is most of an answer: 1,536 numbers for OpenAI's small model. Read a
    number at a time as `JsonText`, the C scanner calls back into Python for each;
    here the vector's text is cut out in one piece (a list of numbers ends at its
    first `]`) and orjson checks its grammar, in C with no callback: for 256
    numbers, 4 µs where the scanner took 14 only to check them. A property test
    holds the two readings to the same answer."""
    try:
        text = content.decode()
        opening = _OPENING(text)
        if opening is None:
            return None
        answer, end = _object(text, opening.end(), _answer_member)
    except (StopIteration, ValueError, RecursionError, _OffShape):
        return None
    return answer if _space(text, end).end() == len(text) else None


class _OffShape(Exception):
    pass


_WS = r"[ \t\n\r]*"
# The whitespace at a place in the text (it always matches, if only nothing).
_space = cast(Callable[..., re.Match[str]], re.compile(_WS).match)
_OPENING = re.compile(_WS + r"\{").match
# A key without escapes or control characters (any other is off shape), its colon,
# and the whitespace up to its value.
_KEY = re.compile(_WS + r'"([^"\\\x00-\x1f]*)"' + _WS + ":" + _WS).match
# What follows a value: the next member or item, or the end of its object or array.
_FOLLOWING = re.compile(_WS + r"([,}\]])" + _WS).match
# The C scanner `json.loads` reads a value with, from a place in the text: the value
# and where it ends. (typeshed takes its argument for a scanner, not a decoder.)
Scan = Callable[[str, int], tuple[Any, int]]
# Every value but a vector is read as `UpstreamClient._parse` reads it.
_EXACT: Scan = make_scanner(json.JSONDecoder(parse_float=JsonText, parse_constant=str))  # type: ignore[arg-type]
_WHITESPACE = b" \t\n\r"
# What a list of numbers is written with: with these taken out, only `[]` is left.
_NUMBER_LIST = b"0123456789.eE+-," + _WHITESPACE

Member = Callable[[str, str, int], tuple[Any, int]]


def _object(text: str, index: int, member: Member) -> tuple[dict[str, Any], int]:
    """The members of the object whose `{` is just before `index`, each value read by
    `member` (given its key and where the value starts); and where the object ends."""
    members: dict[str, Any] = {}
    while (key := _KEY(text, index)) is not None:
        members[key[1]], index = member(key[1], text, key.end())
        index, closed = _after_value(text, index, "}")
        if closed:
            return members, index
    closing = _FOLLOWING(text, index)
    if members or closing is None or closing[1] != "}":
        raise _OffShape  # a comma before `}`, or no key where one belongs
    return members, closing.end()


def _after_value(text: str, index: int, closer: str) -> tuple[int, bool]:
    """Past what follows a value in an object (`closer` `}`) or an array (`]`): where
    the next member or item starts, and whether the object or array ended there."""
    following = _FOLLOWING(text, index)
    if following is None or following[1] not in (",", closer):
        raise _OffShape
    return following.end(), following[1] == closer


def _answer_member(key: str, text: str, index: int) -> tuple[Any, int]:
    if key != "data" or not text.startswith("[", index):
        return _EXACT(text, index)
    items: list[Any] = []
    index = _space(text, index + 1).end()
    if text.startswith("]", index):
        return items, index + 1
    while True:
        if text.startswith("{", index):
            item, index = _object(text, index + 1, _item_member)
        else:
            item, index = _EXACT(text, index)
        items.append(item)
        index, closed = _after_value(text, index, "]")
        if closed:
            return items, index


def _item_member(key: str, text: str, index: int) -> tuple[Any, int]:
    if key == "embedding" and text.startswith("[", index):
        end = text.find("]", index) + 1
        written = text[index:end].encode()
        # Valid JSON of these characters alone is a list of numbers. One orjson cannot
        # read as doubles (`1e400`, past 64-bit integers) is read number by number.
        if end and written.translate(None, _NUMBER_LIST) == b"[]" and _valid(written):
            return VectorText(written.translate(None, _WHITESPACE).decode()), end
    return _EXACT(text, index)


def _valid(written: bytes) -> bool:
    try:
        orjson.loads(written)
    except orjson.JSONDecodeError:
        return False
    return True
