"""What the grouper hands out: a group's stable id and its template."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """A group's stable id and its template as learned so far (`<*>` where it varies)."""

    id: str
    template: str


def fingerprint_id(shape: str) -> str:
    """The id of a group from the shape that created it (a message's masked form, a
    traceback's types and frames): the same in every process, so two processes
    creating it at once agree."""
    return hashlib.blake2b(shape.encode(), digest_size=8).hexdigest()
