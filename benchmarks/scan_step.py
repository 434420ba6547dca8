"""One step of `bench_scan`, in a process of its own so that its peak memory is the
scan's: `python -m benchmarks.scan_step prepare PATH` migrates the throwaway database
the environment names and registers PATH as a local repository; `... scan PK` scans
it once with every registered check, each check timed.

Each prints one line `RESULT {json}` at the end, which `benchmarks.scan` reads.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from types import ModuleType
from typing import Any

RESULT = "RESULT "


def prepare(path: str) -> dict[str, Any]:
    from django.core.management import call_command

    from healthmon.models import Repository

    call_command("migrate", verbosity=0)
    repository = Repository.objects.create(name="bench-scan", path=path)
    return {"repository": repository.pk}


def scan(pk: str) -> dict[str, Any]:
    from healthmon import code_scans
    from healthmon.models import Finding, Repository

    seconds: dict[str, float] = {}
    code_scans.CHECKS = tuple(_timed(check, seconds) for check in code_scans.CHECKS)
    repository = Repository.objects.get(pk=int(pk))
    started = time.perf_counter()
    done = code_scans.scan_repository(repository)
    wall = time.perf_counter() - started
    findings = Finding.objects.filter(repository=repository, last_seen_scan=done)
    return {
        "status": done.status,
        "error": done.error,
        "commit": done.commit,
        "files": done.files_total,
        "seconds": wall,
        "checks": seconds,
        "findings": {check: findings.filter(check_name=check).count() for check in seconds},
        "summary": done.summary,
    }


def _timed(check: ModuleType, seconds: dict[str, float]) -> ModuleType:
    """`check` with its run timed into `seconds[check.NAME]`."""

    def run(context: Any) -> Any:
        started = time.perf_counter()
        try:
            return check.run(context)
        finally:
            seconds[check.NAME] = time.perf_counter() - started

    timed = ModuleType(check.__name__)
    setattr(timed, "NAME", check.NAME)  # noqa: B010 (a module built at run time)
    setattr(timed, "run", run)  # noqa: B010
    return timed


def main(step: str, argument: str) -> None:
    import django

    django.setup()
    result = prepare(argument) if step == "prepare" else scan(argument)
    # ru_maxrss is in kilobytes on Linux: this process's peak, and the largest child's
    # (git, ruff, deptry...) among those it waited for.
    result["rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["children_rss_kb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    sys.stdout.write(RESULT + json.dumps(result) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
