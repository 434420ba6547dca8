"""Log grouping: each message gets a fingerprint that is stable across growth,
processes and restarts (see `grouper`), tracebacks by what raised them (`tracebacks`).

`group_lines(lines)` is the entry point benchmarks and evaluations call; ingest keeps a
`Grouper` per process, rebuilt from the stored templates with `Grouper.from_templates`.
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
