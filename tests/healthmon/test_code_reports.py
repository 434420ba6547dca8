"""The weekly code-health report: new, fixed and still-open findings by check over a
week and the week before, pull requests opened and merged, the latest scan; made once
per ISO week however many makers run, sent once; `code_report`; the report pages."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from controlplane.background import EmbeddedScheduler
from controlplane.models import NotificationDelivery
from healthmon import code_reports, tasks
from healthmon.code_reports import Period, last_complete_week, make_weekly_report
from healthmon.models import CodeReport, Finding, PullRequest, Repository, Scan
from tests.controlplane.test_background import HANG_GUARD_SECONDS
from tests.healthmon.alerting import make_channel

# A Wednesday: the last complete ISO week is Monday 16 to Monday 23 November 2026.
NOW = datetime(2026, 11, 25, 15, 30, tzinfo=UTC)
WEEK_START = datetime(2026, 11, 16, tzinfo=UTC)
WEEK_END = datetime(2026, 11, 23, tzinfo=UTC)


def day(number: int, hour: int = 12) -> datetime:
    return datetime(2026, 11, number, hour, tzinfo=UTC)


def make_repository(name: str = "shop", created: datetime | None = None) -> Repository:
    created = created or day(1)
    repository = Repository.objects.create(name=name, path=f"/srv/{name}")
    Repository.objects.filter(pk=repository.pk).update(created_at=created)
    repository.refresh_from_db()
    return repository


def finding(
    repository: Repository,
    name: str,
    first_seen: datetime,
    fixed: datetime | None = None,
    check: str = "ruff",
    status: str | None = None,
) -> Finding:
    return Finding.objects.create(
        repository=repository,
        check_name=check,
        rule="F401",
        identity=name,
        severity=Finding.Severity.LOW,
        message=f"{name} is imported but unused",
        file="shop/views.py",
        line=1,
        status=status or (Finding.Status.FIXED if fixed else Finding.Status.OPEN),
        first_seen_at=first_seen,
        last_seen_at=fixed or NOW,
        fixed_at=fixed,
    )


def scan(repository: Repository, created: datetime, **fields: Any) -> Scan:
    made = Scan.objects.create(repository=repository, **fields)
    Scan.objects.filter(pk=made.pk).update(created_at=created)
    return made


@pytest.fixture
def shop() -> Repository:
    """A week of findings, pull requests and scans of one repository (see each line)."""
    shop = make_repository()
    finding(shop, "seen-the-week-before", day(10))  # open throughout
    finding(shop, "new-and-open", day(17))
    finding(shop, "fixed-this-week", day(1), fixed=day(18))
    finding(shop, "new-and-fixed", day(18), fixed=day(20))
    finding(shop, "after-the-week", WEEK_END)  # first seen exactly at the end: not in it
    finding(shop, "fixed-the-week-before", day(1), fixed=day(12))
    finding(shop, "meant-so", day(17), status=Finding.Status.INTENDED)
    finding(shop, "unused-function", day(2), check="vulture")
    finding(shop, "long-gone", day(1), fixed=day(3), check="deptry")  # says nothing
    PullRequest.objects.create(
        repository=shop, status="open", base="main", branch="a", title="Remove unused imports",
        number=7, url="https://github.example/shop/pull/7", opened_at=day(17),
    )  # fmt: skip
    PullRequest.objects.create(
        repository=shop, status="merged", base="main", branch="b", title="Format",
        number=5, opened_at=day(10), merged_at=day(19),
    )  # fmt: skip
    PullRequest.objects.create(repository=shop, base="main", branch="c", title="Waiting")
    PullRequest.objects.create(
        repository=shop, status="closed", base="main", branch="d", title="Old", number=3,
        opened_at=day(9),
    )  # fmt: skip
    scan(
        shop,
        day(22),
        status=Scan.Status.FAILED,
        commit="0123456789abcdef",
        error="1 check failed",
        summary={"ruff": {"new": 0}, "deptry": {"error": "PyPI <unreachable>"}},
    )
    scan(shop, day(24), status=Scan.Status.SUCCEEDED, commit="fedcba")  # after the week
    return shop


def test_last_complete_week_is_the_iso_week_before_now() -> None:
    assert last_complete_week(NOW) == Period(WEEK_START, WEEK_END)
    # On Monday at midnight the week just ended is the one reported.
    assert last_complete_week(WEEK_END) == Period(WEEK_START, WEEK_END)
    assert last_complete_week(WEEK_END - timedelta(seconds=1)).end == WEEK_START


@pytest.mark.django_db
def test_a_week_counts_new_fixed_and_open_findings_by_check_with_the_week_before(shop) -> None:
    figures = code_reports.figures(Period(WEEK_START, WEEK_END), [shop])

    [entry] = figures["repositories"]
    assert entry["checks"] == [
        {
            "check": "ruff",
            "new": 2,
            "fixed": 2,
            "open": 2,
            "new_before": 1,
            "fixed_before": 1,
            "open_before": 2,
        },
        {
            "check": "vulture",
            "new": 0,
            "fixed": 0,
            "open": 1,
            "new_before": 0,
            "fixed_before": 0,
            "open_before": 1,
        },
    ]
    assert entry["totals"] == {
        "new": 2,
        "fixed": 2,
        "open": 3,
        "new_before": 1,
        "fixed_before": 1,
        "open_before": 3,
    }
    assert figures["totals"] == entry["totals"]


@pytest.mark.django_db
def test_a_week_counts_the_pull_requests_opened_and_merged_in_it(shop) -> None:
    [entry] = code_reports.figures(Period(WEEK_START, WEEK_END), [shop])["repositories"]

    pulls = entry["pull_requests"]
    assert (pulls["opened"], pulls["merged"]) == (1, 1)
    assert [(pull["number"], pull["merged"]) for pull in pulls["listed"]] == [
        (5, True),
        (7, False),
    ]


@pytest.mark.django_db
def test_a_week_names_its_latest_scan_with_the_checks_that_failed(shop) -> None:
    [entry] = code_reports.figures(Period(WEEK_START, WEEK_END), [shop])["repositories"]

    latest = entry["latest_scan"]
    assert (latest["commit"], latest["status"]) == ("0123456789abcdef", "failed")
    assert latest["failed_checks"] == {"deptry": "PyPI <unreachable>"}


@pytest.mark.django_db
def test_the_summary_says_the_counts_the_trend_the_pull_requests_and_the_scan(shop) -> None:
    make_repository("billing")

    report = make_weekly_report(now=NOW)

    assert report is not None
    failed_scan = Scan.objects.get(status=Scan.Status.FAILED).pk
    assert report.subject == "Code health, week of 2026-11-16: 2 new, 2 fixed, 3 open"
    assert report.text.splitlines() == [
        "billing: 0 new, 0 fixed, 0 open; open a week before: 0 (no change); "
        "the week before: 0 new, 0 fixed",
        "  Pull requests: 0 opened, 0 merged",
        "  Latest scan: none yet",
        "shop: 2 new, 2 fixed, 3 open; open a week before: 3 (no change); "
        "the week before: 1 new, 1 fixed",
        "  ruff: 2 new, 2 fixed, 2 open",
        "  vulture: 0 new, 0 fixed, 1 open",
        "  Pull requests: 1 opened, 1 merged",
        f"  Latest scan #{failed_scan} failed at 0123456789ab "
        "(failed checks: deptry: PyPI <unreachable>)",
    ]
    assert (report.period_start, report.period_end) == (WEEK_START, WEEK_END)


@pytest.mark.django_db
def test_the_trend_shows_how_the_open_findings_moved_since_a_week_before() -> None:
    shop = make_repository()
    finding(shop, "one", day(17))
    finding(shop, "two", day(18))
    finding(shop, "three", day(10), fixed=day(20))
    finding(shop, "four", day(10))

    report = make_weekly_report(now=NOW)

    assert report is not None
    assert "shop: 2 new, 1 fixed, 3 open; open a week before: 2 (+1)" in report.text


@pytest.mark.django_db
def test_the_week_is_reported_once_and_sent_once_with_its_summary(shop) -> None:
    ops, oncall = make_channel("ops"), make_channel("oncall", "https://hooks.example.invalid/2")

    report = make_weekly_report(now=NOW)
    again = make_weekly_report(now=NOW + timedelta(hours=1))

    assert report is not None
    assert again is None
    assert CodeReport.objects.count() == 1
    deliveries = list(NotificationDelivery.objects.order_by("channel__name"))
    assert [delivery.channel for delivery in deliveries] == [oncall, ops]
    for delivery in deliveries:
        assert delivery.dedupe_key == f"healthmon.code_report.{report.pk}"
        assert delivery.subject == report.subject
        assert delivery.body.startswith(report.text)
        assert delivery.body.endswith(f"/health/code/reports/{report.pk}/")
    report.refresh_from_db()
    assert report.sent_at is not None
    assert report.trigger == CodeReport.Trigger.SCHEDULED


@pytest.mark.django_db
def test_nothing_is_reported_before_a_repository_exists() -> None:
    make_repository(created=WEEK_END + timedelta(hours=1))

    assert make_weekly_report(now=NOW) is None
    assert not CodeReport.objects.exists()


@pytest.mark.django_db
def test_the_report_task_is_on_the_periodic_schedule_and_makes_one_report_a_week(
    settings: Any, shop: Repository
) -> None:
    scheduler = EmbeddedScheduler(settings.CELERY_BEAT_SCHEDULE)

    task_name, hourly, _ = scheduler.entries["weekly-code-report"]

    assert (task_name, hourly.run_every) == (
        "healthmon.tasks.make_weekly_code_report",
        timedelta(hours=1),
    )
    made = tasks.make_weekly_code_report()
    assert made is not None
    assert tasks.make_weekly_code_report() is None  # a second tick, or a restart
    assert list(CodeReport.objects.values_list("pk", flat=True)) == [made]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_makers_at_once_store_one_report_and_send_it_once(
    shop: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_channel()
    # Both makers find no report and count before either stores: they meet at the insert.
    both_counted = threading.Barrier(2, timeout=HANG_GUARD_SECONDS)
    count = code_reports.figures

    def count_then_meet(*args: Any) -> Any:
        counted = count(*args)
        both_counted.wait()
        return counted

    monkeypatch.setattr(code_reports, "figures", count_then_meet)
    made: list[CodeReport | None] = []
    errors: list[BaseException] = []

    def maker() -> None:
        try:
            made.append(make_weekly_report(now=NOW))
        except BaseException as exc:  # reported to the test, which asserts there is none
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=maker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(report is None for report in made) == [False, True]
    assert CodeReport.objects.count() == 1
    assert NotificationDelivery.objects.count() == 1


# The command


@pytest.mark.django_db
def test_code_report_prints_and_stores_a_report_of_the_last_seven_days(shop) -> None:
    out = StringIO()

    call_command("code_report", stdout=out)

    report = CodeReport.objects.get()
    assert report.trigger == CodeReport.Trigger.ON_DEMAND
    assert report.period_end - report.period_start == timedelta(days=7)
    assert report.period_end <= timezone.now()
    printed = out.getvalue()
    assert printed.startswith(report.subject + "\n")
    assert "\nshop: 2 new" not in printed  # the last seven days, not the fixture's week
    assert "\nshop: 0 new, 0 fixed, 4 open;" in printed
    assert f"/health/code/reports/{report.pk}/" in printed
    assert not NotificationDelivery.objects.exists()


@pytest.mark.django_db
def test_code_report_of_one_repository_leaves_the_others_out(shop) -> None:
    billing = make_repository("billing")
    out = StringIO()

    call_command("code_report", "--repo", "billing", stdout=out)

    assert CodeReport.objects.get().repository == billing
    assert "billing: " in out.getvalue()
    assert "shop" not in out.getvalue()


@pytest.mark.django_db
def test_code_report_names_the_repositories_when_one_is_unknown(shop) -> None:
    named = r"No repository named 'nope'\. Repositories: shop\."
    with pytest.raises(CommandError, match=named) as refused:
        call_command("code_report", "--repo", "nope", stdout=StringIO())

    assert refused.value.returncode == 1
    assert not CodeReport.objects.exists()


@pytest.mark.django_db
def test_code_report_send_tells_the_channels(shop) -> None:
    make_channel()
    out = StringIO()

    call_command("code_report", "--send", stdout=out)

    report = CodeReport.objects.get()
    delivery = NotificationDelivery.objects.get()
    assert (delivery.subject, delivery.dedupe_key) == (
        report.subject,
        f"healthmon.code_report.{report.pk}",
    )
    assert "Sent to 1 channel." in out.getvalue()


@pytest.mark.django_db
def test_code_report_send_without_a_channel_exits_2_and_keeps_the_report(shop) -> None:
    err = StringIO()

    with pytest.raises(SystemExit) as exit_status:
        call_command("code_report", "--send", stdout=StringIO(), stderr=err)

    assert exit_status.value.code == 2
    assert "Not sent: no notification channel is enabled" in err.getvalue()
    assert CodeReport.objects.get().sent_at is None


# The pages

LIST = reverse("healthmon:code_reports")


@pytest.mark.django_db
def test_an_outsider_is_refused_the_reports_and_a_visitor_asked_to_log_in(
    client, outsider, shop
) -> None:
    report = make_weekly_report(now=NOW)
    assert report is not None
    one = reverse("healthmon:code_report", args=[report.pk])
    make = reverse("healthmon:make_code_report")
    for url in (LIST, one):
        assert client.get(url).status_code == 302
    assert client.post(make).status_code == 302
    client.force_login(outsider)
    for url in (LIST, one):
        assert client.get(url).status_code == 403
    assert client.post(make).status_code == 403
    assert CodeReport.objects.count() == 1


@pytest.mark.django_db
def test_the_list_shows_each_report_newest_first(client, observer, shop) -> None:
    weekly = make_weekly_report(now=NOW)
    later = make_weekly_report(now=NOW + timedelta(days=7))
    assert weekly is not None
    assert later is not None
    client.force_login(observer)

    response = client.get(LIST)

    html = response.content.decode()
    assert response.status_code == 200
    assert html.index(f'id="code-report-{later.pk}"') < html.index(f'id="code-report-{weekly.pk}"')
    assert reverse("healthmon:code_report", args=[weekly.pk]) in html


@pytest.mark.django_db
def test_the_list_costs_the_same_queries_however_many_reports_it_shows(
    client, observer, shop
) -> None:
    client.force_login(observer)
    make_weekly_report(now=NOW)
    with CaptureQueriesContext(connection) as one:
        assert client.get(LIST).status_code == 200
    for weeks in range(1, 4):
        code_reports.make_report(CodeReport.Trigger.ON_DEMAND, Period(WEEK_START, WEEK_END), shop)
        make_weekly_report(now=NOW + timedelta(days=7 * weeks))

    with CaptureQueriesContext(connection) as seven:
        assert client.get(LIST).status_code == 200

    assert len(seven) == len(one)


@pytest.mark.django_db
def test_the_list_says_when_there_is_no_report_yet(client, observer) -> None:
    client.force_login(observer)

    response = client.get(LIST)

    assert response.status_code == 200
    assert "No report yet." in response.content.decode()


@pytest.mark.django_db
def test_a_report_page_shows_the_checks_the_pull_requests_and_the_failed_scan(
    client, observer, shop
) -> None:
    report = make_weekly_report(now=NOW)
    assert report is not None
    client.force_login(observer)

    response = client.get(reverse("healthmon:code_report", args=[report.pk]))

    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="code-report-repo-shop"' in html
    assert "<td>vulture</td><td>0</td><td>0</td><td>1</td>" in html
    assert '<a href="https://github.example/shop/pull/7" rel="noopener">#7</a>' in html
    assert "deptry failed</span>: PyPI &lt;unreachable&gt;" in html  # escaped


@pytest.mark.django_db
def test_an_empty_report_renders_and_a_bad_id_is_not_found(client, observer) -> None:
    report = code_reports.make_report(CodeReport.Trigger.ON_DEMAND, Period(WEEK_START, WEEK_END))
    client.force_login(observer)

    response = client.get(reverse("healthmon:code_report", args=[report.pk]))

    assert response.status_code == 200
    assert "No repositories to report on." in response.content.decode()
    for missing in (report.pk + 1, 2**70):
        assert client.get(reverse("healthmon:code_report", args=[missing])).status_code == 404
    assert client.get(LIST, {"page": "<junk>"}).status_code == 200


@pytest.mark.django_db
def test_any_tier_makes_a_report_of_the_last_seven_days_which_is_not_sent(
    client, observer, shop
) -> None:
    make_channel()
    client.force_login(observer)

    response = client.post(reverse("healthmon:make_code_report"))

    report = CodeReport.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("healthmon:code_report", args=[report.pk])
    assert report.trigger == CodeReport.Trigger.ON_DEMAND
    assert not NotificationDelivery.objects.exists()
    assert client.get(reverse("healthmon:make_code_report")).status_code == 405
