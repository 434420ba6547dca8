"""Test doubles of model providers, shared by tests/routing and tests/chat.

`ScriptedProvider` plays back an exact sequence of model turns; `use_scripted` puts one
in place of a catalog provider, by name, for every thread, until its block ends:

    with use_scripted("openrouter", ScriptedProvider([Reply("Hi.")])):
        ...

It replaces the provider lookup of the call path (`routing.calls.provider_for`) while
any provider is scripted; the product keeps no hook for tests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from routing import calls
from routing.providers import (
    CallTool,
    ChatProvider,
    ChatRequest,
    Completion,
    ProviderError,
    Reply,
    StreamChunk,
)
from routing.providers.offline import Answer, complete_answer, stream_answer

if TYPE_CHECKING:
    from routing.models import Provider

__all__ = [
    "CallTool",
    "Delay",
    "ProviderError",
    "Reply",
    "ScriptExhaustedError",
    "ScriptedProvider",
    "Turn",
    "use_scripted",
]


@dataclass(frozen=True)
class Delay:
    """Not a call of its own: the call that plays the next turn takes this long first.
    With the provider's `timeout` shorter, that call fails as a timeout instead."""

    seconds: float


Turn = Reply | CallTool | Delay | ProviderError


class ScriptExhaustedError(AssertionError):
    """A test made more calls than it scripted turns."""


class ScriptedProvider:
    """Plays back an exact sequence of model turns, one per call, and records the
    requests it got.

        ScriptedProvider([CallTool("search", {"q": "logs"}), Delay(0.5),
                          Reply("Found it.", cost="0.0002"),
                          ProviderError("busy", code="rate_limited", retry_after=3)])
    """

    def __init__(
        self,
        turns: Sequence[Turn],
        *,
        label: str = "scripted",
        timeout: float | None = None,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        # `sleep`: how a delay passes; a test of the delays themselves records them.
        self.label = label
        self.timeout = timeout
        self._sleep = sleep
        self.requests: list[ChatRequest] = []
        self._turns = list(turns)
        self._lock = threading.Lock()

    @property
    def remaining(self) -> int:
        """Turns not yet played (delays not counted)."""
        return sum(not isinstance(turn, Delay) for turn in self._turns)

    def complete(self, request: ChatRequest) -> Completion:
        turn = self._next_turn(request)
        if isinstance(turn, Reply) and turn.error_after is not None:
            raise turn.error_after
        return complete_answer(turn, request)

    def stream(self, request: ChatRequest) -> Iterator[StreamChunk | Completion]:
        turn = self._next_turn(request)  # raises here, before the first chunk
        return self._stream_turn(turn, request)

    def _stream_turn(
        self, turn: Answer, request: ChatRequest
    ) -> Iterator[StreamChunk | Completion]:
        error_after = turn.error_after if isinstance(turn, Reply) else None
        for item in stream_answer(turn, request):
            if error_after is not None and isinstance(item, StreamChunk) and item.finish_reason:
                raise error_after
            yield item

    def _next_turn(self, request: ChatRequest) -> Answer:
        with self._lock:
            self.requests.append(request)
            call_number = len(self.requests)
            delay = 0.0
            while self._turns and isinstance(head := self._turns[0], Delay):
                delay += head.seconds
                self._turns.pop(0)
            if not self._turns:
                raise ScriptExhaustedError(
                    f"{self.label}: call {call_number} has no scripted turn left"
                )
            turn = self._turns.pop(0)
        if self.timeout is not None and delay > self.timeout:
            self._sleep(self.timeout)
            raise ProviderError(
                f"{self.label}: no answer within {self.timeout:g} s", code="timeout"
            )
        if delay:
            self._sleep(delay)
        if isinstance(turn, ProviderError):
            raise turn
        assert not isinstance(turn, Delay)
        return turn


# The call path's lookup, and the scripted providers standing in, by catalog name.
_catalog_provider_for = calls.provider_for
_scripted: dict[str, ChatProvider] = {}
_lock = threading.Lock()


def _provider_for(provider: Provider, api: str = "chat_completions") -> ChatProvider:
    scripted = _scripted.get(provider.name)
    return scripted if scripted is not None else _catalog_provider_for(provider, api=api)


@contextmanager
def use_scripted(provider_name: str, scripted: ChatProvider) -> Iterator[ChatProvider]:
    """Answer every call to the catalog provider named `provider_name` with `scripted`
    (any ChatProvider, usually a ScriptedProvider) until the block ends."""
    with _lock:
        previous = _scripted.get(provider_name)
        _scripted[provider_name] = scripted
        calls.provider_for = _provider_for  # type: ignore[assignment]
    try:
        yield scripted
    finally:
        with _lock:
            if previous is None:
                _scripted.pop(provider_name, None)
            else:
                _scripted[provider_name] = previous
            if not _scripted:
                calls.provider_for = _catalog_provider_for
