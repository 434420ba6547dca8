"""Processes for the multiprocess test of /metrics (test_metrics.py), each started
with PROMETHEUS_MULTIPROC_DIR set before anything imports prometheus-client, as a
daphne or Celery process is in scale mode.

    python -m tests.controlplane.metrics_processes count         # one failed live update
    python -m tests.controlplane.metrics_processes count scrape  # then GET /metrics to stdout

(A process starts in seconds here, Django's setup: each job is not a process.)
"""

from __future__ import annotations

import sys

import django


def main(jobs: list[str]) -> None:
    django.setup()
    for job in jobs:
        run(job)


def run(job: str) -> None:
    if job == "count":
        from controlplane.metrics import count_publish_failure

        count_publish_failure("failed")
    elif job == "scrape":
        from django.test import Client

        response = Client(HTTP_HOST="localhost").get("/metrics")
        assert response.status_code == 200, response.content
        sys.stdout.write(response.content.decode())
    else:
        raise SystemExit(f"unknown job {job!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
