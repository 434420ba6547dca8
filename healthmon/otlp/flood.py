"""How fast one source may push: `HEALTHMON_OTLP_RECORDS_PER_SECOND` records a
second, counted per source in the cache (shared by every web process in scale mode),
so a flood from one service is answered 429 with Retry-After instead of taking the
ingest from everyone else.

A counter per source and second: `incr` is atomic in Redis, so concurrent batches
cannot both take the last of a second's allowance. A batch larger than a whole
second's allowance still passes when it is the first of its second, so a big batch
is slowed down, never refused for good. (The embedded mode's file cache does not
increment atomically: a burst may overshoot a little there.)
"""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache

clock = time.time  # tests move it


def admit(source_id: int, records: int) -> int:
    """0 when `records` more from this source are admitted now, else the seconds to
    wait before trying again."""
    allowance = settings.HEALTHMON_OTLP_RECORDS_PER_SECOND
    if allowance <= 0 or records <= 0:
        return 0
    second = int(clock())
    key = f"healthmon:otlp:flood:{source_id}:{second}"
    cache.add(key, 0, timeout=5)
    try:
        total = cache.incr(key, records)
    except ValueError:  # expired between add and incr
        cache.set(key, records, timeout=5)
        total = records
    if total > allowance and total != records:
        cache.decr(key, records)  # not taken: leave the allowance to smaller batches
        return 1
    return 0
