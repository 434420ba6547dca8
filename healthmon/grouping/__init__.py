"""Log grouping: each message gets a fingerprint that is stable across growth,
processes and restarts (see `grouper`), tracebacks by what raised them (`tracebacks`).

`group_lines(lines)` is the entry point benchmarks and evaluations call. Ingest:

- keeps one `Grouper` per process (or thread), built at start from the stored
  (fingerprint id, template) pairs with `Grouper.from_templates`;
- joins a traceback logged one record per line with `TracebackAssembler` (flushing it
  at the end of each batch), then calls `grouper.fingerprint(message)` on each record;
- stores a fingerprint it has not stored yet under a unique constraint on its id: two
  processes creating the same new group at once compute the same id, so one row wins
  and the other's insert is a no-op; it saves the template as it generalises;
- from time to time hands the grouper what other processes stored since
  (`grouper.learn(id, template)`), so processes that first met a pattern through
  different messages converge on the stored group.
"""

from __future__ import annotations

from healthmon.grouping.fingerprints import Fingerprint
from healthmon.grouping.grouper import Grouper, group_lines
from healthmon.grouping.tracebacks import (
    TracebackAssembler,
    parse_traceback,
    traceback_fingerprint,
)

__all__ = [
    "Fingerprint",
    "Grouper",
    "TracebackAssembler",
    "group_lines",
    "parse_traceback",
    "traceback_fingerprint",
]
