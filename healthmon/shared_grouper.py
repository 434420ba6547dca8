"""The grouper every ingest in this process uses, kept in step with the storage.

Each process groups inline with a grouper of its own (`healthmon.grouping`), built at
first use from the stored (fingerprint key, template) pairs. Other processes store
groups too; this process learns the rows stored since it last looked (by their
increasing `id`) before each batch, at most once a `SYNC_SECONDS`.

A group this process met first is stored under a lock (`creating`): inside it the
process learns what others stored, and gives up its own group for a stored one that
takes the same template (`Grouper.retire`). So two processes that meet the same new
pattern at the same moment, even through different messages, end with one fingerprint:
the second to take the lock adopts the first one's. Rows are only ever inserted
inside that lock, so they become visible in the order of their ids.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import Max
from django.utils import timezone

from healthmon.grouping import Fingerprint as Grouped
from healthmon.grouping import Grouper

SYNC_SECONDS = 1.0
CHANGE_MARGIN = timedelta(seconds=30)
# The PostgreSQL advisory lock that serialises storing new fingerprints.
_CREATION_LOCK = 0x6865616C74686D6E  # "healthmn"


class SharedGrouper:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._grouper: Grouper | None = None
        self._synced_id = 0
        self._synced_at = 0.0
        self._changes_seen_at: datetime | None = None
        # Keys known to be stored (for some service): never candidates to retire.
        self._stored: set[str] = set()

    def fingerprint(self, message: str) -> Grouped:
        """Call with `lock` held, after `refresh`."""
        assert self._grouper is not None
        return self._grouper.fingerprint(message)

    def refresh(self) -> None:
        """Learn what other processes stored, unless done within `SYNC_SECONDS`."""
        with self.lock:
            if self._grouper is None or time.monotonic() - self._synced_at >= SYNC_SECONDS:
                self._learn_stored()

    def adopt(self, key: str) -> Grouped | None:
        """Inside `creating`: the stored group a new key of this process gives way to,
        or None when it is a group of its own to store."""
        with self.lock:
            if key in self._stored or self._grouper is None:
                return None
            return self._grouper.retire(key)

    def stored(self, keys: set[str]) -> None:
        with self.lock:
            self._stored |= keys

    @contextmanager
    def creating(self) -> Iterator[None]:
        """Inside a transaction: hold the lock under which new fingerprints are stored,
        having learned every group stored before it."""
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CREATION_LOCK])
        # SQLite: the write transaction (IMMEDIATE) already excludes other writers.
        with self.lock:
            self._learn_stored()
            yield

    def forget(self) -> None:
        """Drop what was learned (tests, after the storage is emptied)."""
        with self.lock:
            self._grouper = None
            self._synced_id = 0
            self._synced_at = 0.0
            self._changes_seen_at = None
            self._stored = set()

    def _learn_stored(self) -> None:
        from healthmon.models import Fingerprint

        newest = Fingerprint.objects.aggregate(newest=Max("id"))["newest"] or 0
        if self._grouper is None or newest < self._synced_id:
            # First use, or the storage was emptied under this process: start over.
            self._grouper = Grouper()
            self._synced_id = 0
            self._changes_seen_at = None
            self._stored = set()
        rows = Fingerprint.objects.filter(id__gt=self._synced_id).order_by("id")
        for id, key, template in rows.values_list("id", "key", "template").iterator(2000):
            if "\n" not in template:  # a traceback's group is not learned: see grouping
                self._grouper.learn(key, template)
            self._stored.add(key)
            self._synced_id = id
        # Templates others generalised since the last look. A change commits a moment
        # after its time is taken, so look back a margin; learning one twice is a no-op.
        if self._changes_seen_at is not None:
            changed = Fingerprint.objects.filter(
                template_changed_at__gte=self._changes_seen_at - CHANGE_MARGIN
            )
            for key, template in changed.values_list("key", "template").iterator(2000):
                if "\n" not in template:
                    self._grouper.learn(key, template)
        self._changes_seen_at = timezone.now()
        self._synced_at = time.monotonic()


shared_grouper = SharedGrouper()
