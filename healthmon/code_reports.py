"""The code-health report: made once per ISO week by the periodic schedule and sent
through the notification channels, or on demand (`bin/manage code_report`, the last
seven days) for one repository or all.

Per repository and check it counts the findings first seen in the period (new), fixed
in it, and open at its end, with the same three a period earlier for the trend; the
product's pull requests opened and merged in the period; and the latest scan before
its end. Counts come from each finding's first-seen and fixed-at times, so a finding
fixed and later reopened counts as open throughout, and intended or ignored findings
are left out. The scheduled week is unique (a constraint), so two makers at once store one
report and the channels are told once, in the same transaction as the report.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.urls import reverse
from django.utils import timezone

from controlplane.notifications import notify
from healthmon.models import CodeReport, Finding, PullRequest, Repository, Scan

WEEK = timedelta(days=7)
COUNTED = ("new", "fixed", "open", "new_before", "fixed_before", "open_before")
# Pull requests named in a report; the rest are counted.
PULL_REQUESTS_LISTED = 20


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime

    def before(self) -> Period:
        return Period(self.start - (self.end - self.start), self.start)


def last_complete_week(now: datetime) -> Period:
    """The ISO week (Monday to Monday, in TIME_ZONE) that ended last before `now`."""
    zone = timezone.get_default_timezone()
    today = timezone.localtime(now, zone).date()
    monday = today - timedelta(days=today.weekday())
    end = datetime.combine(monday, time.min, tzinfo=zone)
    start = datetime.combine(monday - WEEK, time.min, tzinfo=zone)
    return Period(start, end)


def seven_days_before(now: datetime) -> Period:
    return Period(now - WEEK, now)


def make_weekly_report(now: datetime | None = None) -> CodeReport | None:
    """The last complete week's report, made and sent once; None when it was made
    already (here or by another process) or there is no repository to report on."""
    period = last_complete_week(now or timezone.now())
    scheduled = CodeReport.objects.filter(
        trigger=CodeReport.Trigger.SCHEDULED, period_start=period.start
    )
    if scheduled.exists() or not Repository.objects.filter(created_at__lt=period.end).exists():
        return None
    try:
        return make_report(CodeReport.Trigger.SCHEDULED, period, send=True)
    except IntegrityError:
        if scheduled.exists():
            return None  # another maker stored this week's report first, and sent it
        raise


def make_report(
    trigger: str, period: Period, repository: Repository | None = None, *, send: bool = False
) -> CodeReport:
    """Build, store and (with `send`) notify in one transaction: a report is never
    stored unsent when it was meant to be sent, nor sent without being stored."""
    repositories = [repository] if repository else _repositories(period)
    report_figures = figures(period, repositories)
    subject, text = render(report_figures, trigger)
    with transaction.atomic():
        report = CodeReport.objects.create(
            trigger=trigger,
            period_start=period.start,
            period_end=period.end,
            repository=repository,
            figures=report_figures,
            subject=subject,
            text=text,
        )
        if send:
            send_report(report)
    return report


def send_report(report: CodeReport) -> int:
    """Hand the summary to every enabled channel, once per report; how many took it."""
    deliveries = notify(
        report.subject,
        f"{report.text}\n{report_url(report)}",
        dedupe_key=f"healthmon.code_report.{report.pk}",
    )
    if deliveries:
        report.sent_at = timezone.now()
        CodeReport.objects.filter(pk=report.pk).update(sent_at=report.sent_at)
    return len(deliveries)


def report_url(report: CodeReport) -> str:
    path = reverse("healthmon:code_report", args=[report.pk])
    return f"{settings.SITE_URL.rstrip('/')}{path}"


def _repositories(period: Period) -> list[Repository]:
    return list(Repository.objects.filter(created_at__lt=period.end).order_by("name"))


def figures(period: Period, repositories: Iterable[Repository]) -> dict[str, Any]:
    """What the report says, as JSON: the period, and per repository its counts by
    check (this period and the one before), pull requests and latest scan."""
    repositories = list(repositories)
    by_check = _finding_counts(period, [r.pk for r in repositories])
    opened, merged = _pull_requests(period, [r.pk for r in repositories])
    entries: list[dict[str, Any]] = []
    for repository in repositories:
        checks = [
            {"check": check, **counts}
            for (repository_id, check), counts in sorted(by_check.items())
            if repository_id == repository.pk
        ]
        entries.append(
            {
                "name": repository.name,
                "enabled": repository.enabled,
                "checks": checks,
                "totals": _totals(checks),
                "pull_requests": {
                    "opened": len(opened.get(repository.pk, [])),
                    "merged": len(merged.get(repository.pk, [])),
                    "listed": _listed(opened.get(repository.pk, []), merged.get(repository.pk, [])),
                },
                "latest_scan": _latest_scan(repository, period),
            }
        )
    return {
        "period": {"start": period.start.isoformat(), "end": period.end.isoformat()},
        "repositories": entries,
        "totals": _totals([entry["totals"] for entry in entries]),
    }


def _open_at(moment: datetime) -> Q:
    return Q(first_seen_at__lt=moment) & (Q(fixed_at__isnull=True) | Q(fixed_at__gte=moment))


def _within(field: str, period: Period) -> Q:
    return Q(**{f"{field}__gte": period.start, f"{field}__lt": period.end})


def _finding_counts(
    period: Period, repository_ids: list[int]
) -> dict[tuple[int, str], dict[str, int]]:
    before = period.before()
    rows = (
        Finding.objects.filter(repository_id__in=repository_ids)
        .exclude(status__in=[Finding.Status.INTENDED, Finding.Status.IGNORED])
        .values("repository_id", "check_name")
        .annotate(
            new=Count("pk", filter=_within("first_seen_at", period)),
            fixed=Count("pk", filter=_within("fixed_at", period)),
            open=Count("pk", filter=_open_at(period.end)),
            new_before=Count("pk", filter=_within("first_seen_at", before)),
            fixed_before=Count("pk", filter=_within("fixed_at", before)),
            open_before=Count("pk", filter=_open_at(period.start)),
        )
    )
    counts: dict[tuple[int, str], dict[str, int]] = {}
    for row in rows:
        numbers = {
            "new": row["new"],
            "fixed": row["fixed"],
            "open": row["open"],
            "new_before": row["new_before"],
            "fixed_before": row["fixed_before"],
            "open_before": row["open_before"],
        }
        if any(numbers.values()):  # a check whose findings were all fixed long ago says nothing
            counts[(row["repository_id"], row["check_name"])] = numbers
    return counts


def _totals(rows: Iterable[dict[str, Any]]) -> dict[str, int]:
    rows = list(rows)
    return {name: sum(int(row.get(name, 0)) for row in rows) for name in COUNTED}


def _pull_requests(
    period: Period, repository_ids: list[int]
) -> tuple[dict[int, list[PullRequest]], dict[int, list[PullRequest]]]:
    found = PullRequest.objects.filter(repository_id__in=repository_ids).filter(
        _within("opened_at", period) | _within("merged_at", period)
    )
    opened: dict[int, list[PullRequest]] = {}
    merged: dict[int, list[PullRequest]] = {}
    for pull in found.order_by("opened_at", "pk"):
        if pull.opened_at and period.start <= pull.opened_at < period.end:
            opened.setdefault(pull.repository_id, []).append(pull)
        if pull.merged_at and period.start <= pull.merged_at < period.end:
            merged.setdefault(pull.repository_id, []).append(pull)
    return opened, merged


def _listed(opened: list[PullRequest], merged: list[PullRequest]) -> list[dict[str, Any]]:
    unique = {pull.pk: pull for pull in sorted([*opened, *merged], key=_opened_first)}
    return [
        {
            "number": pull.number,
            "title": pull.title,
            "url": pull.url,
            "status": pull.status,
            "merged": pull in merged,
        }
        for pull in list(unique.values())[:PULL_REQUESTS_LISTED]
    ]


def _opened_first(pull: PullRequest) -> tuple[datetime, int]:
    return (pull.opened_at or pull.created_at, pull.pk)


def _latest_scan(repository: Repository, period: Period) -> dict[str, Any] | None:
    scan = (
        Scan.objects.filter(repository=repository, created_at__lt=period.end)
        .order_by("-created_at", "-pk")
        .first()
    )
    if scan is None:
        return None
    return {
        "id": scan.pk,
        "commit": scan.commit,
        "status": scan.status,
        "at": (scan.finished_at or scan.created_at).isoformat(),
        "error": scan.error,
        "failed_checks": {
            check: str(outcome["error"])
            for check, outcome in sorted(scan.summary.items())
            if isinstance(outcome, dict) and "error" in outcome
        },
    }


def render(report_figures: dict[str, Any], trigger: str) -> tuple[str, str]:
    """The subject and the plain-text summary the channels are sent."""
    start = datetime.fromisoformat(report_figures["period"]["start"])
    end = datetime.fromisoformat(report_figures["period"]["end"])
    if trigger == CodeReport.Trigger.SCHEDULED:
        when = f"week of {timezone.localtime(start):%Y-%m-%d}"
    else:
        minute = "%Y-%m-%d %H:%M"
        when = f"{timezone.localtime(start):{minute}} to {timezone.localtime(end):{minute}}"
    totals = report_figures["totals"]
    subject = f"Code health, {when}: {_counts(totals)}"
    lines = []
    for entry in report_figures["repositories"]:
        lines.append(f"{entry['name']}: {_counts(entry['totals'])}; {_trend(entry['totals'])}")
        lines += [f"  {row['check']}: {_counts(row)}" for row in entry["checks"]]
        pulls = entry["pull_requests"]
        lines.append(f"  Pull requests: {pulls['opened']} opened, {pulls['merged']} merged")
        lines.append(f"  {_scan_line(entry['latest_scan'])}")
    if not lines:
        lines.append("No repositories to report on.")
    return subject[:200], "\n".join(lines)


def _counts(row: dict[str, Any]) -> str:
    return f"{row['new']} new, {row['fixed']} fixed, {row['open']} open"


def _trend(totals: dict[str, Any]) -> str:
    change = totals["open"] - totals["open_before"]
    moved = f"{change:+d}" if change else "no change"
    return (
        f"open a week before: {totals['open_before']} ({moved}); the week before: "
        f"{totals['new_before']} new, {totals['fixed_before']} fixed"
    )


def _scan_line(scan: dict[str, Any] | None) -> str:
    if scan is None:
        return "Latest scan: none yet"
    commit = f" at {scan['commit'][:12]}" if scan["commit"] else ""
    line = f"Latest scan #{scan['id']} {scan['status']}{commit}"
    if scan["failed_checks"]:
        failed = "; ".join(f"{check}: {why}" for check, why in scan["failed_checks"].items())
        line += f" (failed checks: {failed})"
    elif scan["error"]:
        line += f" ({scan['error']})"
    return line
