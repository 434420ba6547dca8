"""What the Code health page shows: each repository with its latest scan (live
progress while it runs, failed checks with their reason, a score trend over its last
scans), the findings by check with filters, what is new this week and the open
product pull requests. The page and its websocket (`healthmon.code_consumers`) build
fragments with the same functions, so a live fragment is what a reload shows.

Every part is a fixed number of queries, whatever the number of repositories, scans
and findings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from django.core.paginator import Page, Paginator
from django.db.models import F, Q, QuerySet, Window
from django.db.models.functions import RowNumber
from django.http import QueryDict
from django.utils import timezone

from healthmon.models import Finding, PullRequest, Repository, Scan

TREND_SCANS = 20
FINDINGS_PER_PAGE = 50
NEW_THIS_WEEK_SHOWN = 50
NEW_SINCE = timedelta(days=7)
SPARK_WIDTH, SPARK_HEIGHT = 120, 24
SEVERITIES = {label: int(value) for value, label in Finding.Severity.choices}
STATUSES = [str(value) for value in Finding.Status.values]
OPEN_PULL_REQUESTS = [PullRequest.Status.PROPOSED, PullRequest.Status.OPEN]
# A scan row without its largest column (what the checks keep for the next scan).
SCAN_FIELDS_SHOWN = [
    "pk",
    "repository_id",
    "status",
    "created_at",
    "started_at",
    "finished_at",
    "commit",
    "branch",
    "files_scanned",
    "files_total",
    "error",
    "summary",
    "progress",
    "score",
]


def commit_url(repository: Repository, commit: str) -> str:
    """The commit on GitHub, or "" for a local repository (shown as path and sha)."""
    if repository.kind != Repository.Kind.GITHUB or not repository.full_name or not commit:
        return ""
    return f"https://github.com/{repository.full_name}/commit/{commit}"


def line_url(repository: Repository, commit: str, file: str, line: int | None) -> str:
    if repository.kind != Repository.Kind.GITHUB or not repository.full_name or not commit:
        return ""
    anchor = f"#L{line}" if line else ""
    return f"https://github.com/{repository.full_name}/blob/{commit}/{quote(file)}{anchor}"


@dataclass
class RepositoryRow:
    """A repository with its latest scan and the scores of its last finished scans."""

    repository: Repository
    scans: list[Scan] = field(default_factory=list)  # newest first

    @property
    def latest(self) -> Scan | None:
        return self.scans[0] if self.scans else None

    @property
    def commit_url(self) -> str:
        return commit_url(self.repository, self.latest.commit) if self.latest else ""

    @property
    def failed_checks(self) -> list[tuple[str, str]]:
        """(check, reason) of the latest scan's failed checks."""
        summary = self.latest.summary if self.latest else {}
        return [
            (name, str(counts["error"]))
            for name, counts in sorted((summary or {}).items())
            if isinstance(counts, dict) and "error" in counts
        ]

    @property
    def check_counts(self) -> list[tuple[str, dict[str, Any]]]:
        """(check, counts) of the latest scan's checks that succeeded."""
        summary = self.latest.summary if self.latest else {}
        return [
            (name, counts)
            for name, counts in sorted((summary or {}).items())
            if isinstance(counts, dict) and "error" not in counts
        ]

    @property
    def check_progress(self) -> list[tuple[str, int, int]]:
        progress = self.latest.progress if self.latest else {}
        return [
            (name, int(pair[0]), int(pair[1]))
            for name, pair in (progress or {}).items()
            if isinstance(pair, list | tuple) and len(pair) == 2
        ]

    @property
    def scores(self) -> list[int]:
        """The scores of the last finished scans, oldest first."""
        return [scan.score for scan in reversed(self.scans) if scan.score is not None]

    @property
    def score(self) -> int | None:
        scores = self.scores
        return scores[-1] if scores else None

    @property
    def spark_points(self) -> str:
        """The trend as an SVG polyline's points (higher is worse)."""
        scores = self.scores
        if not scores:
            return ""
        top = max(scores) or 1
        step = SPARK_WIDTH / max(len(scores) - 1, 1)
        points = []
        for index, score in enumerate(scores):
            y = SPARK_HEIGHT - 1 - (SPARK_HEIGHT - 2) * score / top
            points.append(f"{round(index * step, 2)},{round(y, 2)}")
        if len(points) == 1:
            points.append(f"{SPARK_WIDTH},{points[0].split(',')[1]}")
        return " ".join(points)


def repository_rows(ids: list[int] | None = None) -> list[RepositoryRow]:
    """Every repository (or those of `ids`) with its last TREND_SCANS scans: two queries."""
    repositories = Repository.objects.all()
    if ids is not None:
        repositories = repositories.filter(pk__in=ids)
    rows = {repository.pk: RepositoryRow(repository) for repository in repositories}
    ranked = (
        Scan.objects.filter(repository_id__in=list(rows))
        .only(*SCAN_FIELDS_SHOWN)
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("repository_id")],
                order_by=[F("created_at").desc(), F("pk").desc()],
            )
        )
        .filter(rank__lte=TREND_SCANS)
        .order_by("repository_id", "-created_at", "-pk")
    )
    for scan in ranked:
        rows[scan.repository_id].scans.append(scan)
    return list(rows.values())


def latest_scan_marks() -> dict[int, tuple[Any, ...]]:
    """Per repository, what its row shows of its latest scan, to tell a change (the
    live page's look for what it missed): one query."""
    latest = Scan.objects.annotate(
        rank=Window(
            RowNumber(),
            partition_by=[F("repository_id")],
            order_by=[F("created_at").desc(), F("pk").desc()],
        )
    ).filter(rank=1)
    marks: dict[int, tuple[Any, ...]] = {}
    for scan in latest.only(*SCAN_FIELDS_SHOWN):
        marks[scan.repository_id] = (
            scan.pk,
            scan.status,
            scan.files_scanned,
            scan.files_total,
            repr(scan.progress),
            scan.commit,
        )
    return marks


@dataclass(frozen=True)
class CodeFilters:
    """The findings' filters, from the page's query string (the websocket gets it too)."""

    repository: str = ""
    check: str = ""
    severity: int = 0  # at least
    status: str = Finding.Status.OPEN  # "" is any
    text: str = ""
    page: str = "1"

    @classmethod
    def from_query(cls, query: QueryDict) -> tuple[CodeFilters, list[str]]:
        """The filters asked for; a bad value is named in the errors and ignored."""
        errors: list[str] = []
        values: dict[str, Any] = {}
        for name in ("repository", "check", "q", "page"):
            asked = query.get(name, "")
            if len(asked) > 200 or "\x00" in asked:
                errors.append(f"The {name} filter is at most 200 characters (and has no NUL).")
            else:
                values["text" if name == "q" else name] = asked.strip()
        severity = query.get("severity", "")
        if severity in SEVERITIES:
            values["severity"] = SEVERITIES[severity]
        elif severity:
            errors.append(f"Unknown severity '{severity[:40]}': one of {', '.join(SEVERITIES)}.")
        status = query.get("status", Finding.Status.OPEN)
        if status in STATUSES or status == "":
            values["status"] = status
        else:
            errors.append(f"Unknown status '{status[:40]}': one of {', '.join(STATUSES)}.")
        values["page"] = values.get("page") or "1"
        return cls(**values), errors

    @property
    def severity_name(self) -> str:
        return Finding.Severity(self.severity).label if self.severity else ""

    def matching(self) -> Q:
        match = Q()
        if self.repository:
            match &= Q(repository__name=self.repository)
        if self.check:
            match &= Q(check_name=self.check)
        if self.severity:
            match &= Q(severity__gte=self.severity)
        if self.status:
            match &= Q(status=self.status)
        if self.text:
            match &= (
                Q(message__icontains=self.text)
                | Q(file__icontains=self.text)
                | Q(rule__icontains=self.text)
            )
        return match

    def query_without_page(self) -> str:
        query = QueryDict(mutable=True)
        for name, value in (
            ("repository", self.repository),
            ("check", self.check),
            ("severity", self.severity_name),
            ("q", self.text),
        ):
            if value:
                query[name] = value
        query["status"] = self.status
        return query.urlencode()


def _findings() -> QuerySet[Finding]:
    return Finding.objects.select_related("repository").annotate(
        seen_commit=F("last_seen_scan__commit")
    )


def with_links(findings: list[Finding]) -> list[Finding]:
    for finding in findings:
        finding.line_url = line_url(  # type: ignore[attr-defined]
            finding.repository,
            finding.seen_commit,  # type: ignore[attr-defined]
            finding.file,
            finding.line,
        )
    return findings


def findings_page(filters: CodeFilters) -> Page[Finding]:
    found = _findings().filter(filters.matching()).order_by("-severity", "check_name", "pk")
    page = Paginator(found, FINDINGS_PER_PAGE).get_page(filters.page)
    page.object_list = with_links(list(page.object_list))
    return page


def new_this_week() -> tuple[list[Finding], int]:
    """Findings first seen in the last NEW_SINCE still open, newest first, and how many."""
    recent = _findings().filter(
        first_seen_at__gte=timezone.now() - NEW_SINCE, status=Finding.Status.OPEN
    )
    shown = with_links(list(recent.order_by("-first_seen_at", "-pk")[:NEW_THIS_WEEK_SHOWN]))
    return shown, recent.count()


def open_pull_requests() -> list[PullRequest]:
    return list(
        PullRequest.objects.filter(status__in=OPEN_PULL_REQUESTS)
        .select_related("repository", "approval")
        .order_by("-created_at", "-pk")
    )


def pull_request_marks() -> list[tuple[Any, ...]]:
    return list(
        PullRequest.objects.filter(status__in=OPEN_PULL_REQUESTS)
        .order_by("pk")
        .values_list("pk", "status", "url", "title", "approval_id", "approval__status")
    )


def known_checks() -> list[str]:
    from healthmon.code_scans import CHECKS

    names = {check.NAME for check in CHECKS}
    names.update(Finding.objects.values_list("check_name", flat=True).distinct())
    return sorted(names)


def findings_context(filters: CodeFilters) -> dict[str, Any]:
    return {"filters": filters, "findings": findings_page(filters)}


def new_this_week_context() -> dict[str, Any]:
    shown, count = new_this_week()
    return {"new_findings": shown, "new_count": count}


def page_context(filters: CodeFilters, errors: list[str]) -> dict[str, Any]:
    rows = repository_rows()
    return {
        **findings_context(filters),
        **new_this_week_context(),
        "filter_errors": errors,
        "rows": rows,
        "pull_requests": open_pull_requests(),
        "repository_names": sorted(row.repository.name for row in rows),
        "checks": known_checks(),
        "severities": list(SEVERITIES),
        "statuses": STATUSES,
        "now": timezone.now(),
    }
