"""`benchmarks.event_writer.EventWriter`, the group-commit producer of `bench_events`:
everything in order in a few transactions, and a failure said out loud."""

from __future__ import annotations

import pytest

from benchmarks.event_writer import EventWriter, EventWriterError
from chat.models import Run, StreamEvent
from tests.chat.runs import make_run, published_seqs, seqs_of


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
