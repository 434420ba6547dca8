"""Django's SQLite backend, with the threads of one process taking turns to write.

SQLite lets one transaction write at a time. When a thread's `BEGIN IMMEDIATE` finds
the write lock taken, SQLite's busy handler sleeps and retries: 1 ms, then 2, 5, 10
and on up to 100 ms between tries, however soon the lock is let go. On the gateway's
threads, where a call's reservation follows the last call's settlement within a
millisecond, those sleeps were most of what the gateway added to a call, and under
load they made a tail of seconds.

So within a process the write transactions of one database file queue on a lock of
their own, taken before `BEGIN IMMEDIATE` and given back at the commit or rollback: a
thread waiting for it starts the moment the writer before it ends. Other processes,
and single statements outside a transaction, still meet SQLite's own locking and
busy handler as before. The wait for the lock is bounded by the database's `timeout`
option, as SQLite's own wait is, and ends with the same "database is locked" error.
"""

from __future__ import annotations

import threading
from typing import Any

from django.db import OperationalError
from django.db.backends.sqlite3 import base

_writers: dict[str, threading.Lock] = {}
_writers_lock = threading.Lock()


def _writer_lock(name: str) -> threading.Lock:
    with _writers_lock:
        return _writers.setdefault(name, threading.Lock())


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held_writer_lock: threading.Lock | None = None  # while in a write transaction

    def _start_transaction_under_autocommit(self) -> None:
        lock = _writer_lock(str(self.settings_dict["NAME"]))
        timeout = float(self.settings_dict.get("OPTIONS", {}).get("timeout", 5))
        if not lock.acquire(timeout=timeout):
            raise OperationalError(
                f"database is locked: another thread of this process kept its write "
                f"transaction open for over {timeout:g} s"
            )
        self._held_writer_lock = lock
        try:
            super()._start_transaction_under_autocommit()  # type: ignore[misc]  # not in the stubs
        except BaseException:
            self._release_writer_lock()
            raise

    def _commit(self) -> None:
        try:
            super()._commit()  # type: ignore[misc]  # not in the stubs
        finally:
            self._release_writer_lock()

    def _rollback(self) -> None:
        try:
            super()._rollback()  # type: ignore[misc]  # not in the stubs
        finally:
            self._release_writer_lock()

    def _close(self) -> None:
        try:
            super()._close()  # type: ignore[misc]  # not in the stubs
        finally:
            self._release_writer_lock()

    def _release_writer_lock(self) -> None:
        lock, self._held_writer_lock = self._held_writer_lock, None
        if lock is not None:
            lock.release()
