"""Celery tasks of the health monitor: thin wrappers with explicit time limits."""

from __future__ import annotations

from celery import shared_task

from healthmon import fix_tasks, retention
from healthmon.alerts import evaluation


@shared_task(time_limit=120, soft_time_limit=100)
def open_fix_tasks(fingerprint_ids: list[int]) -> int:
    return len(fix_tasks.open_fix_tasks(fingerprint_ids))


@shared_task(time_limit=600, soft_time_limit=540)
def crawl_logs() -> dict[str, int]:
    """Crawl every enabled Railway source once (each holds its own lock, so a crawl
    still running from the last tick is left alone)."""
    from healthmon.railway.crawler import crawl_all

    outcomes = crawl_all()
    return {
        "sources": len(outcomes),
        "lines": sum(outcome.lines for outcome in outcomes),
        "failed": sum(bool(outcome.error) for outcome in outcomes),
    }


@shared_task(time_limit=55, soft_time_limit=50)
def evaluate_alerts() -> int:
    result = evaluation.evaluate_alerts()
    return len(result.opened) + len(result.cleared)


@shared_task(time_limit=540, soft_time_limit=500)
def sweep_storage() -> dict[str, int]:
    return retention.sweep().as_dict()


@shared_task(time_limit=3600, soft_time_limit=3540)
def scan_code() -> dict[str, int]:
    """Scan every enabled repository once (a scan past its own time limit is failed
    by the next run, so a killed worker never leaves a repository locked)."""
    from healthmon.code_scans import scan_all

    scans = scan_all()
    return {
        "repositories": len(scans),
        "failed": sum(scan.status == scan.Status.FAILED for scan in scans),
    }


@shared_task(time_limit=300, soft_time_limit=270)
def make_weekly_code_report() -> int | None:
    """The last complete ISO week's code report, made and sent once: the hourly tick
    finds it made already on every run but the first after Monday 00:00."""
    from healthmon.code_reports import make_weekly_report

    report = make_weekly_report()
    return report.pk if report else None
