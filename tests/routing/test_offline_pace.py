"""The offline model's pace: a demo run streams for a few seconds (long enough to watch
and to press Stop), paced by OFFLINE_TOKEN_DELAY_SECONDS; 0 answers at once. Waits go
through an injected sleeper, so nothing here waits for real."""

from __future__ import annotations

from decimal import Decimal

from routing.providers.base import ChatRequest, Completion, StreamChunk
from routing.providers.offline import OfflineProvider
from tests.settings_process import settings_of

QUESTION = ChatRequest(
    model="offline/echo", messages=[{"role": "user", "content": "What did we spend today?"}]
)


def played(offline: OfflineProvider, waits: list[float]) -> tuple[list[object], Completion]:
    """The stream as it happened: each wait, then each piece of text, in order."""
    timeline: list[object] = []
    completion = None
    for item in offline.stream(QUESTION):
        if isinstance(item, Completion):
            completion = item
        elif isinstance(item, StreamChunk) and item.content:
            timeline.extend(waits)  # the waits before this piece
            waits.clear()
            timeline.append(item.content)
    assert completion is not None
    return timeline, completion


def test_each_piece_of_the_answer_comes_after_one_pause(settings) -> None:
    settings.OFFLINE_TOKEN_DELAY_SECONDS = 0.25
    waits: list[float] = []

    timeline, completion = played(OfflineProvider(sleep=waits.append), waits)

    pieces = [entry for entry in timeline if isinstance(entry, str)]
    assert len(pieces) > 10
    assert "".join(pieces) == completion.content
    assert timeline == [entry for piece in pieces for entry in (0.25, piece)]


def test_no_pause_when_the_setting_is_zero(settings) -> None:
    settings.OFFLINE_TOKEN_DELAY_SECONDS = 0
    waits: list[float] = []

    timeline, completion = played(OfflineProvider(sleep=waits.append), waits)

    assert "".join(str(entry) for entry in timeline) == completion.content
    assert not any(isinstance(entry, float) for entry in timeline)


def test_the_demo_pace_streams_an_answer_for_seconds_not_an_instant() -> None:
    demo = settings_of("controlplane.settings", "OFFLINE_TOKEN_DELAY_SECONDS")
    waits: list[float] = []

    timeline, _ = played(OfflineProvider(token_delay=demo, sleep=waits.append), waits)

    streamed_for = sum(Decimal(str(entry)) for entry in timeline if isinstance(entry, float))
    # Seen streaming, with time to press Stop, yet read at once: a few seconds.
    assert Decimal(2) <= streamed_for <= Decimal(10)
    assert settings_of("tests.settings", "OFFLINE_TOKEN_DELAY_SECONDS") == 0
