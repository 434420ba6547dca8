"""What ingest keeps of a record's attributes: plain JSON as given; a value JSON has
no name for as its text; NULs and unpaired surrogates replaced (PostgreSQL's jsonb
refuses them)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from healthmon.ingest import LogRecord, ingest
from healthmon.models import LogSource, Sample

pytestmark = pytest.mark.django_db


@pytest.fixture
def source() -> LogSource:
    return LogSource.objects.create(name="files", service="files", kind=LogSource.Kind.FILE)


def test_plain_json_attributes_are_kept_as_given(source: LogSource) -> None:
    attributes = {"user": "zoë", "tries": 3, "ok": False, "tags": ["a", {"b": None}]}
    ingest(source, [LogRecord("upload done", attributes=dict(attributes))])
    assert Sample.objects.get().attributes == attributes


def test_other_values_are_stored_as_text_and_bad_characters_replaced(source: LogSource) -> None:
    attributes = {
        "when": datetime(2026, 1, 2, 3, 4, tzinfo=UTC),
        "nul": "a\x00b",
        "broken": "x\ud800y",
        "id\x00": 1,
    }
    ingest(source, [LogRecord("upload done", attributes=attributes)])
    stored = Sample.objects.get().attributes
    assert stored["when"] == "2026-01-02 03:04:00+00:00"
    assert stored["nul"] == "a\ufffdb"
    assert stored["broken"] == "x?y"
    assert stored["id\ufffd"] == 1
