"""Fingerprints are stable in storage: across restarts, as other groups arrive, and
when several processes ingest the same new patterns at the same moment."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.db.models import Sum

from healthmon.ingest import LogRecord, ingest
from healthmon.levels import Level
from healthmon.models import Fingerprint, LogSource
from healthmon.shared_grouper import SharedGrouper, shared_grouper
from tests.healthmon.test_grouping import generated, sample_messages


def ingest_lines(source: LogSource, lines: list[str], batch: int = 200) -> list[int]:
    new: list[int] = []
    for start in range(0, len(lines), batch):
        records = [LogRecord(line, level=Level.ERROR) for line in lines[start : start + batch]]
        new += ingest(source, records).new_fingerprints
    return new


@pytest.fixture
def source(db: Any) -> LogSource:
    return LogSource.objects.create(name="mixed", service="mixed", kind=LogSource.Kind.FILE)


def test_after_a_restart_the_same_lines_find_the_same_fingerprints(source: LogSource) -> None:
    lines = sample_messages()
    ingest_lines(source, lines)
    stored = dict(Fingerprint.objects.values_list("key", "count"))

    shared_grouper.forget()  # a restart: the process learns everything from storage
    random.Random(3).shuffle(lines)
    assert ingest_lines(source, lines) == []

    assert dict(Fingerprint.objects.values_list("key", "count")) == {
        key: count * 2 for key, count in stored.items()
    }


def test_a_fingerprint_stays_as_10000_lines_of_other_groups_arrive(source: LogSource) -> None:
    timeouts = [f"Connection to db-{i}.internal timed out after {i}s" for i in range(5)]
    ingest_lines(source, timeouts)
    first = Fingerprint.objects.get()

    others = [message for _, message in generated(10_000, seed=11)]
    assert len(ingest_lines(source, others, batch=500)) > 1
    assert ingest_lines(source, timeouts) == []

    again = Fingerprint.objects.get(pk=first.pk)
    assert (again.key, again.count) == (first.key, 10)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_processes_meeting_the_same_new_patterns_at_once_agree(
    source: LogSource,
) -> None:
    # Made-up lines whose patterns hold a word that varies (a user name): each process
    # meets them through different first messages, so they create different ids.
    lines = sample_messages()[::4] + [message for _, message in generated(400, seed=5)]
    orders = [lines, list(reversed(lines))]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "CONTROLPLANE_LIVE_TEST_DB": str(connection.settings_dict["NAME"]),
        "CONTROLPLANE_LIVE_TEST_CACHE": str(settings.CACHES["default"].get("LOCATION", "")),
    }
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.healthmon.ingest_process", source.name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=settings.BASE_DIR,
        )
        for _ in orders
    ]
    for process, order in zip(processes, orders, strict=True):
        assert process.stdin is not None
        process.stdin.write(json.dumps(order))
        process.stdin.flush()
    for process in processes:  # both start now: stdin closing is their signal
        assert process.stdin is not None
        process.stdin.close()
    answers = []
    for process, order in zip(processes, orders, strict=True):
        assert process.stdout is not None
        keys = json.loads(process.stdout.read())
        assert process.wait() == 0
        answers.append(dict(zip(order, keys, strict=True)))

    assert answers[0] == answers[1]
    stored = set(Fingerprint.objects.values_list("key", flat=True))
    assert set(answers[0].values()) == stored
    assert Fingerprint.objects.aggregate(total=Sum("count"))["total"] == 2 * len(lines)
    # As many fingerprints as one process alone would have made of these lines.
    Fingerprint.objects.all().delete()
    shared_grouper.forget()
    ingest_lines(source, lines, batch=50)
    assert Fingerprint.objects.count() == len(stored)


def test_a_process_that_met_a_pattern_through_another_message_adopts_the_stored_group(
    source: LogSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two processes, each with its own grouper; neither looks at storage between
    # batches, so the second has not learned what the first stored.
    monkeypatch.setattr("healthmon.shared_grouper.SYNC_SECONDS", 10**9)
    first, second = SharedGrouper(), SharedGrouper()
    for process in (first, second):
        process.refresh()

    monkeypatch.setattr("healthmon.ingest.shared_grouper", first)
    ingest_lines(source, ["Failed password for admin from 10.0.0.1 port 22 ssh2"])
    monkeypatch.setattr("healthmon.ingest.shared_grouper", second)
    ingest_lines(source, ["Failed password for oracle from 10.0.0.2 port 23 ssh2"])

    stored = Fingerprint.objects.get()  # one group, not one per process
    assert stored.count == 2
    with second.lock:
        assert second.fingerprint("Failed password for guest from 10.0.0.3 port 24 ssh2").id == (
            stored.key
        )
