"""`benchmarks.event_writer.EventWriter`, the group-commit producer of `bench_events`:
everything in order in a few transactions, and a failure said out loud."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.event_writer import EventWriter, EventWriterError
from chat.models import Run, StreamEvent
from controlplane import live
from tests.chat.runs import make_run


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """What reaches the channel layer, in the order it was handed over."""
    sent: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(live, "_send", lambda group, message: sent.append((group, message)))
    return sent


def seqs_of(run: Run) -> list[int]:
    return list(run.events.order_by("seq").values_list("seq", flat=True))


def published_seqs(published: list[tuple[str, dict[str, Any]]]) -> list[list[int]]:
    return [[event["seq"] for event in message["events"]] for _, message in published]


@pytest.mark.django_db(transaction=True)
def test_an_event_writer_writes_everything_in_order_in_a_few_transactions(operator, published):
    run = make_run(operator)

    with EventWriter(run.pk, interval=0.05) as writer:
        for number in range(200):
            writer.emit("token", {"text": f"[{number}]"})

    texts = [event.data["text"] for event in run.events.order_by("seq")]
    assert texts == [f"[{number}]" for number in range(200)]
    assert seqs_of(run) == list(range(1, 201))
    assert writer.written == 200
    # Published once per transaction, consecutive seqs each, in order, all of them.
    batches = published_seqs(published)
    assert len(batches) < 10
    assert [seq for batch in batches for seq in batch] == list(range(1, 201))


@pytest.mark.django_db(transaction=True)
def test_an_event_writer_that_cannot_write_says_so(operator):
    run = make_run(operator)
    writer = EventWriter(run.pk + 1000)
    writer.emit("token", {"text": "nowhere"})

    with pytest.raises(EventWriterError, match=f"run {run.pk + 1000} failed") as failure:
        writer.close()

    assert isinstance(failure.value.__cause__, Run.DoesNotExist)
    with pytest.raises(EventWriterError):
        writer.emit("token", {"text": "still nowhere"})
    assert not StreamEvent.objects.exists()
