"""Crawl records in the operator panel: Observability, read-only, one query page."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from healthmon.models import CrawlRecord, LogSource

pytestmark = pytest.mark.django_db


def make_records(count: int) -> None:
    now = timezone.now()
    for number in range(count):
        source = LogSource.objects.create(
            name=f"src-{CrawlRecord.objects.count()}", service="api", kind=LogSource.Kind.RAILWAY
        )
        CrawlRecord.objects.create(
            source=source,
            started_at=now,
            finished_at=now + timedelta(seconds=1),
            duration=timedelta(seconds=1),
            lines=number,
            error="" if number % 2 else "Railway's API failed (HTTP 503).",
        )


def listing_queries(client: Any) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/admin/healthmon/crawlrecord/")
    assert response.status_code == 200
    return len(queries)


def test_crawl_records_are_under_observability(client: Any, observer: Any) -> None:
    client.force_login(observer)
    sections = {
        app["name"]: [m["name"] for m in app["models"]]
        for app in client.get("/admin/").context["app_list"]
    }
    assert "Crawl records" in sections["Observability"]


def test_the_list_shows_each_crawl_and_nobody_changes_one(client: Any, owner: Any) -> None:
    make_records(2)
    client.force_login(owner)
    content = client.get("/admin/healthmon/crawlrecord/").content.decode()
    assert "Railway&#x27;s API failed (HTTP 503)." in content
    record = CrawlRecord.objects.first()
    assert record is not None
    assert client.get("/admin/healthmon/crawlrecord/add/").status_code == 403
    assert client.post(f"/admin/healthmon/crawlrecord/{record.pk}/delete/").status_code == 403
    assert CrawlRecord.objects.filter(pk=record.pk).exists()


def test_the_list_costs_the_same_queries_for_more_rows(client: Any, observer: Any) -> None:
    client.force_login(observer)
    make_records(2)
    few = listing_queries(client)
    make_records(10)
    assert listing_queries(client) == few
