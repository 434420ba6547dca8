"""Batches ingested at once on PostgreSQL, each mixing patterns already stored with
new ones: none fails (no deadlock between the rows one batch locks and the creation
lock another holds), and every record is counted once."""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest
from django.db import connection, connections
from django.db.models import Sum

from healthmon.ingest import LogRecord, ingest
from healthmon.levels import Level
from healthmon.models import Fingerprint, LogSource, ServiceMinute

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="row locks and the creation lock: PostgreSQL"
    ),
]

WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
]
THREADS = 4
BATCHES = 12


def batch(rng: random.Random, number: int) -> list[LogRecord]:
    # Later batches reach further into the words: each brings patterns nobody stored.
    reach = min(len(WORDS), 6 + number * 2)
    records = []
    for _ in range(40):
        first, second = rng.sample(WORDS[:reach], 2)
        records.append(
            LogRecord(
                f"{first} worker could not reach {second} after {rng.randint(1, 999)} ms",
                level=Level.ERROR,
                service=rng.choice(["api", "jobs"]),
            )
        )
    return records


def test_concurrent_batches_of_old_and_new_patterns_all_land_once(settings: Any) -> None:
    settings.HEALTHMON_TASK_MIN_COUNT = 10**9  # no tasks: this is about the counts
    source = LogSource.objects.create(name="busy", service="busy", kind=LogSource.Kind.OTLP)
    failures: list[BaseException] = []
    sent = [0] * THREADS

    def push(thread: int) -> None:
        rng = random.Random(thread)
        try:
            for number in range(BATCHES):
                records = batch(rng, number)
                result = ingest(source, records)
                sent[thread] += result.accepted
        except BaseException as error:
            failures.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=push, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert sum(sent) == THREADS * BATCHES * 40
    assert Fingerprint.objects.aggregate(total=Sum("count"))["total"] == sum(sent)
    assert ServiceMinute.objects.aggregate(total=Sum("records"))["total"] == sum(sent)
    # One fingerprint per (service, key): the unique constraint held.
    assert Fingerprint.objects.count() == len(
        set(Fingerprint.objects.values_list("service", "key"))
    )
