"""`manage.py crawl_logs`: crawl now, print what each source read."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from controlplane.models import Integration
from healthmon.models import CrawlRecord, LogSource
from tests.healthmon.railway_server import RailwayServer

pytestmark = pytest.mark.django_db


@pytest.fixture
def railway() -> Iterator[RailwayServer]:
    with RailwayServer() as server:
        yield server


@pytest.fixture
def source(railway: RailwayServer) -> LogSource:
    integration = Integration(
        kind=Integration.Kind.RAILWAY, name="railway", settings={"api_url": railway.url}
    )
    integration.set_secrets({"token": "railway-token"})
    integration.save()
    return LogSource.objects.create(
        name="api-railway",
        service="api",
        kind=LogSource.Kind.RAILWAY,
        integration=integration,
        settings={"environment_id": "env-1", "service_id": "svc-1"},
    )


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("crawl_logs", *args, stdout=out)
    return out.getvalue()


def test_it_crawls_every_source_and_prints_what_it_read(
    railway: RailwayServer, source: LogSource
) -> None:
    moment = timezone.now() - timedelta(minutes=2)
    railway.add_line("payment 1 failed: card declined", at=moment, severity="error")
    railway.add_line("payment 2 failed: card declined", at=moment, severity="error")

    output = run()

    assert output.startswith("api-railway: 2 lines, 1 new fingerprints, 0 already seen, ")
    assert CrawlRecord.objects.get(source=source).lines == 2


def test_a_failed_crawl_is_printed_and_exits_non_zero(
    railway: RailwayServer, source: LogSource
) -> None:
    railway.outage = True
    out = io.StringIO()
    with pytest.raises(CommandError, match="1 of 1 crawls failed"):
        call_command("crawl_logs", "--source", "api-railway", stdout=out)
    assert "failed: Railway's API failed (HTTP 503)." in out.getvalue()


def test_one_source_is_crawled_even_when_backing_off(
    railway: RailwayServer, source: LogSource
) -> None:
    source.set_state(backoff_until=timezone.now() + timedelta(hours=1))
    assert "skipped, backing off until" in run()
    assert run("--source", "api-railway").startswith("api-railway: 0 lines")


def test_an_unknown_or_non_railway_source_is_a_clear_error(source: LogSource) -> None:
    with pytest.raises(
        CommandError, match=r"No log source named 'nope'\. Railway sources: api-railway"
    ):
        run("--source", "nope")
    LogSource.objects.create(name="file-src", service="api", kind=LogSource.Kind.FILE)
    with pytest.raises(CommandError, match="only Railway sources are crawled"):
        run("--source", "file-src")


def test_without_sources_it_says_how_to_add_one(db: object) -> None:
    assert "No enabled Railway sources" in run()


def test_the_periodic_task_crawls_each_enabled_source(
    railway: RailwayServer, source: LogSource
) -> None:
    from healthmon.tasks import crawl_logs

    railway.add_line("ready", at=timezone.now() - timedelta(seconds=30))
    LogSource.objects.create(
        name="paused", service="api", kind=LogSource.Kind.RAILWAY, enabled=False
    )

    assert crawl_logs() == {"sources": 1, "lines": 1, "failed": 0}
