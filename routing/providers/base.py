"""What every provider speaks: OpenAI-style chat completions, as plain data.

A provider takes a `ChatRequest` and either returns a `Completion` or, streaming,
yields `StreamChunk`s and then a final `Completion` (its usage and cost). Failures
are `ProviderError`s that say whether trying another model could help.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from controlplane.money import to_decimal


@dataclass(frozen=True)
class ChatRequest:
    model: str  # the provider's model id
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    # Anything else the caller sent (OpenAI-compatible fields), passed through as is.
    extra: dict[str, Any] = field(default_factory=dict)

    def body(self, *, stream: bool) -> dict[str, Any]:
        payload: dict[str, Any] = {**self.extra, "model": self.model, "messages": self.messages}
        if self.tools:
            payload["tools"] = self.tools
        if self.max_tokens is not None:
            payload["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            payload["temperature"] = self.temperature
        if stream:
            payload["stream"] = True
            payload["stream_options"] = {"include_usage": True}
        return payload


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens read from the provider's cache
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0  # part of completion_tokens, priced on their own when listed
    # The units priced besides tokens (`routing.models.catalog.UNIT_PRICES`): input
    # images, seconds of input audio and video, characters spoken. Measured from the
    # request (`routing.call_units`) unless the provider reports them.
    images: int = 0
    audio_seconds: Decimal = Decimal(0)
    video_seconds: Decimal = Decimal(0)
    characters: int = 0
    # What the provider says the call cost (OpenRouter's usage.cost), exactly.
    reported_cost: Decimal | None = None

    # What the provider sent that could not be read as a count or a cost, by field
    # (`pricing.checked_usage` flags it on the call's log row).
    unreadable: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_openai(cls, usage: Any) -> Usage:
        """Read an OpenAI/OpenRouter `usage` object (numbers parsed as Decimal or int).
        A value that is no number is kept aside in `unreadable`, counted as nothing."""
        if not usage or not isinstance(usage, dict):
            return cls(unreadable={"usage": repr(usage)[:100]} if usage else {})
        prompt_details = _details(usage.get("prompt_tokens_details"))
        completion_details = _details(usage.get("completion_tokens_details"))
        unreadable: dict[str, str] = {}

        def count(name: str, value: Any) -> int:
            if value is None or value == "":
                return 0
            try:
                number = to_decimal(value)
                if isinstance(value, bool) or number is None or not number.is_finite():
                    raise ValueError(value)
                return int(number)
            except (ArithmeticError, TypeError, ValueError):
                unreadable[name] = repr(value)[:100]
                return 0

        try:
            cost = to_decimal(usage.get("cost"))
        except (ArithmeticError, TypeError, ValueError):
            unreadable["cost"], cost = repr(usage.get("cost"))[:100], None
        return cls(
            prompt_tokens=count("prompt_tokens", usage.get("prompt_tokens")),
            completion_tokens=count("completion_tokens", usage.get("completion_tokens")),
            cached_tokens=count("cached_tokens", prompt_details.get("cached_tokens")),
            cache_write_tokens=count(
                "cache_write_tokens",
                prompt_details.get("cache_write_tokens")
                or usage.get("cache_creation_input_tokens"),
            ),
            reasoning_tokens=count("reasoning_tokens", completion_details.get("reasoning_tokens")),
            reported_cost=cost,
            unreadable=unreadable,
        )


def _details(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it


@dataclass
class Completion:
    """The whole answer: text, tool calls, why it ended, usage, and the raw response."""

    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    model: str = ""  # as the provider reported it
    response_id: str = ""
    raw: dict[str, Any] | None = None  # the non-streamed JSON body, for pass-through


@dataclass
class StreamChunk:
    """One server-sent event's worth of answer, and the raw event for pass-through."""

    content: str = ""
    tool_call_deltas: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    raw: dict[str, Any] | None = None


class ProviderError(Exception):
    """A failed call. `retryable` means another model (a fallback) may succeed."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = True,
        retry_after: float | None = None,
        code: str = "provider_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.code = code


class ChatProvider(Protocol):
    label: str  # shown in the UI, e.g. "offline"

    def complete(self, request: ChatRequest) -> Completion: ...

    def stream(self, request: ChatRequest) -> Iterator[StreamChunk | Completion]:
        """Yield chunks as they arrive, then exactly one final Completion."""
        ...
