"""Writing the run event stream: gap-free seqs, one transaction and one message per
change, and, with several writers of one run at once, commit
order equal to seq order (a reader that replays `after=seq` never skips an event)."""

from __future__ import annotations

import random
import threading
import time

import pytest
from django.db import connection, transaction

from benchmarks.event_writer import EventWriter
from chat.events import (
    emit,
    emit_many,
    events_after,
    run_group,
)
from chat.models import Run, StreamEvent
from tests.chat.runs import make_run, published_seqs, seqs_of

# -- one writer -------------------------------------------------------------------------


@pytest.mark.django_db
def test_events_get_gap_free_seqs_from_one_whether_emitted_alone_or_together(operator):
    run = make_run(operator)

    first = emit(run.pk, "status", {"status": "thinking", "detail": ""})
    together = emit_many(run.pk, [("token", {"text": "a"}), ("token", {"text": "b"})])
    last = emit(run.pk, "budget", {})

    assert [first.seq, *(event.seq for event in together), last.seq] == [1, 2, 3, 4]
    assert seqs_of(run) == [1, 2, 3, 4]
    assert list(run.events.order_by("seq").values_list("type", flat=True)) == [
        "status",
        "token",
        "token",
        "budget",
    ]
    run.refresh_from_db()
    assert run.next_seq == 5


@pytest.mark.django_db
def test_the_events_of_one_change_are_published_once_as_one_message_after_commit(
    operator, published, django_capture_on_commit_callbacks
):
    run = make_run(operator)

    with django_capture_on_commit_callbacks() as callbacks:
        emit_many(
            run.pk,
            [("status", {"status": "stopped", "detail": "Done."}), ("stop_reason", {})],
        )
        assert published == []  # nothing goes out before the rows are committed
    for callback in callbacks:
        callback()

    [(group, message)] = published
    assert group == run_group(run.pk)
    assert message["type"] == "run.events"
    assert message["run_id"] == run.pk
    assert [(e["seq"], e["event_type"]) for e in message["events"]] == [
        (1, "status"),
        (2, "stop_reason"),
    ]
    assert message["events"][0]["data"] == {"status": "stopped", "detail": "Done."}


@pytest.mark.django_db
def test_a_change_rolled_back_takes_its_seqs_and_its_message_with_it(
    operator, published, django_capture_on_commit_callbacks
):
    run = make_run(operator)

    def failing_change() -> None:
        with transaction.atomic():
            emit_many(run.pk, [("token", {"text": "lost"}), ("token", {"text": "too"})])
            raise RuntimeError("the change failed")

    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(RuntimeError, match="the change failed"):
            failing_change()
        emit(run.pk, "token", {"text": "kept"})

    assert seqs_of(run) == [1]
    assert run.events.get().data == {"text": "kept"}
    assert published_seqs(published) == [[1]]


@pytest.mark.django_db
def test_emitting_to_a_run_that_does_not_exist_raises_and_writes_nothing(operator):
    run = make_run(operator)

    with pytest.raises(Run.DoesNotExist):
        emit(run.pk + 1000, "token", {"text": "nowhere"})

    assert not StreamEvent.objects.exists()
    assert emit_many(run.pk, []) == []


# -- several writers of one run ----------------------------------------------------------


def write_from_many_threads_while_replaying(run: Run, writers: int, changes: int) -> None:
    """`writers` threads write `changes` changes of two events each to one run, each
    holding its transaction open a moment after its seqs are allocated (as the agent
    does while it stops a run), one of them through an EventWriter. A reader replays
    `events_after(last seq seen)` all the while: it must never see a seq before the
    ones below it, since it would skip those for good."""
    barrier = threading.Barrier(writers + 1)
    writing_done = threading.Event()
    errors: list[str] = []
    seen: list[StreamEvent] = []

    def write(number: int) -> None:
        try:
            barrier.wait(timeout=10)
            for change in range(changes):
                pair = [("token", {"text": f"{number}.{change}.{part}"}) for part in "ab"]
                with transaction.atomic():
                    emit_many(run.pk, pair)
                    time.sleep(random.uniform(0, 0.003))  # others wait for this commit
        except Exception as exc:
            errors.append(repr(exc))
        finally:
            connection.close()

    def write_through_a_writer() -> None:
        try:
            barrier.wait(timeout=10)
            with EventWriter(run.pk, interval=0.001) as writer:
                for change in range(changes):
                    writer.emit("token", {"text": f"w.{change}.a"})
                    writer.emit("token", {"text": f"w.{change}.b"})
                    time.sleep(random.uniform(0, 0.003))
        except Exception as exc:
            errors.append(repr(exc))

    def replay() -> None:
        last = 0
        try:
            while True:
                done = writing_done.is_set()  # read before the last replay: it sees all
                for event in events_after(run.pk, last):
                    if event.seq != last + 1:
                        errors.append(f"read seq {event.seq} while {last + 1} was missing")
                    last = event.seq
                    seen.append(event)
                if done:
                    return
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers - 1)]
    threads.append(threading.Thread(target=write_through_a_writer))
    reader = threading.Thread(target=replay)
    reader.start()
    for thread in threads:
        thread.start()
    barrier.wait(timeout=10)
    for thread in threads:
        thread.join(timeout=120)
    writing_done.set()
    reader.join(timeout=120)

    assert errors == []
    total = writers * changes * 2
    assert [event.seq for event in seen] == list(range(1, total + 1))
    assert seqs_of(run) == list(range(1, total + 1))
    texts = [event.data["text"] for event in seen]
    for index in range(0, total, 2):  # the two events of a change are never apart
        assert texts[index].endswith(".a")
        assert texts[index + 1] == texts[index][:-1] + "b"
    for writer in ["w", *map(str, range(writers - 1))]:  # each writer's own order kept
        own = [text for text in texts if text.startswith(f"{writer}.")]
        assert own == [f"{writer}.{change}.{part}" for change in range(changes) for part in "ab"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_many_writers_of_one_run_commit_in_seq_order_on_postgresql(operator):
    assert connection.vendor == "postgresql"
    write_from_many_threads_while_replaying(make_run(operator), writers=8, changes=25)


@pytest.mark.django_db(transaction=True)
def test_several_writers_of_one_run_commit_in_seq_order_on_any_database(operator):
    write_from_many_threads_while_replaying(make_run(operator), writers=3, changes=10)
