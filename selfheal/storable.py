"""What a worker sends that the database could never store, found before anything is
written.

PostgreSQL refuses a NUL character in text and `\\u0000` in jsonb, and jsonb has no
NaN or Infinity (JSON itself has neither; Python's parser accepts them, and turns
`1e400` into Infinity). SQLite would store all three, and the task would then read
back as something no other client can parse. Nesting is bounded too, so that
nothing downstream (the database's parser, a page rendering the result) recurses
without end.
"""

from __future__ import annotations

import math
from typing import Any

# Levels of arrays and objects in one value: far past any real report, far below
# where Python's or PostgreSQL's parsers run out of stack.
MAX_DEPTH = 64


def problem_in(value: Any, name: str) -> str | None:
    """Why `value` (the body's field `name`) cannot be stored, naming where in it the
    trouble is (`result.rows[2]`); None when it can."""
    pending: list[tuple[Any, str, int]] = [(value, name, 0)]
    # A stack, not recursion: the value may be as deep as the parser allowed.
    while pending:
        item, where, depth = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return f"'{where}' holds a NUL character (\\u0000), which cannot be stored."
        elif isinstance(item, float):
            if not math.isfinite(item):
                return (
                    f"'{where}' is {item!r}: JSON numbers are finite "
                    "(NaN, Infinity and numbers past 1e308 cannot be stored)."
                )
        elif isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                return f"'{where}' is nested deeper than {MAX_DEPTH} levels."
            if isinstance(item, list):
                pending.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(item))
                continue
            for key, v in item.items():
                if "\x00" in str(key):
                    return (
                        f"A key in '{where}' holds a NUL character (\\u0000), "
                        "which cannot be stored."
                    )
                pending.append((v, f"{where}.{key}", depth + 1))
    return None
