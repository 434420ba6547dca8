"""A process that ingests lines into the test database, as a second web process or a
Celery worker would: `python -m tests.healthmon.ingest_process SOURCE < lines`.

It reads the lines (a JSON list) until stdin closes, which is its start signal (the
test closes two processes' stdin together), ingests them in batches, then prints the
fingerprint key each line has now.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    django.setup()

    from healthmon.ingest import LogRecord, ingest
    from healthmon.levels import Level
    from healthmon.models import LogSource
    from healthmon.shared_grouper import shared_grouper

    source = LogSource.objects.get(name=sys.argv[1])
    lines: list[str] = json.load(sys.stdin)  # returns once the test closes stdin
    for start in range(0, len(lines), 50):
        ingest(source, [LogRecord(line, level=Level.ERROR) for line in lines[start : start + 50]])
    shared_grouper.forget()  # as after a restart: only what is stored counts
    shared_grouper.refresh()
    with shared_grouper.lock:
        sys.stdout.write(json.dumps([shared_grouper.fingerprint(line).id for line in lines]))


if __name__ == "__main__":
    main()
