"""`manage.py ingest_logs`: plain and JSON lines from a file or stdin."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Sum
from django.utils import timezone

from healthmon.levels import Level
from healthmon.models import Fingerprint, LogSource, Sample

pytestmark = pytest.mark.django_db


@pytest.fixture
def source() -> LogSource:
    return LogSource.objects.create(name="backfill", service="billing", kind=LogSource.Kind.FILE)


def run(*args: str, stdin: io.BytesIO | None = None) -> str:
    out = io.StringIO()
    call_command("ingest_logs", *args, stdout=out, stdin=stdin)
    return out.getvalue()


def counted() -> int:
    return Fingerprint.objects.aggregate(n=Sum("count"))["n"] or 0


def test_it_ingests_plain_lines_from_a_file(source: LogSource, tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_text(
        "2026-12-01 10:00:01 INFO request 1 served in 12ms\n"
        "2026-12-01 10:00:02 INFO request 2 served in 15ms\n"
        "\n"
        "2026-12-01 10:00:03 ERROR payment 7 failed: card declined\n"
    )

    output = run("--source", "backfill", str(path))

    assert output == "backfill: 3 lines read, 3 accepted, 0 rejected, 2 new fingerprints.\n"
    assert counted() == 3
    error = Fingerprint.objects.get(level=Level.ERROR)
    assert "card declined" in error.template
    assert error.service == "billing"


def test_it_reads_json_lines_and_plain_lines_mixed_from_stdin(source: LogSource) -> None:
    yesterday = (timezone.now() - timedelta(days=1)).replace(microsecond=0)
    lines = [
        {"msg": "cache miss for key 42", "level": "debug", "ts": 1764583200},
        {
            "message": "db timeout after 30s",
            "severity": "ERROR",
            "time": yesterday.isoformat().replace("+00:00", "Z"),
            "request_id": "r-1",
        },
        {
            "body": "user 9 signed in",
            "timestamp": int(yesterday.timestamp() * 1000),
            "service": "auth",
        },
        {"level": "error"},  # no message
    ]
    text = "\n".join(json.dumps(line) for line in lines) + "\nWARN disk 91% full\n{not json\n"

    output = run("--source", "backfill", "-", stdin=io.BytesIO(text.encode()))

    assert output.startswith("backfill: 6 lines read, 5 accepted, 1 rejected, 5 new fingerprints.")
    assert "rejected: a record with no message body" in output
    timeout = Fingerprint.objects.get(template__startswith="db timeout")
    assert timeout.level == Level.ERROR
    sample = Sample.objects.get(fingerprint=timeout)
    assert sample.attributes == {"request_id": "r-1"}
    assert sample.at == yesterday
    assert Fingerprint.objects.get(service="auth").template.startswith("user")
    assert Fingerprint.objects.get(template__startswith="WARN").level == Level.WARNING
    assert Fingerprint.objects.get(template__startswith="{not").level == Level.INFO


def test_it_stores_a_large_file_in_batches(source: LogSource, tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    path.write_text("".join(f"job {n} done\n" for n in range(1203)))
    output = run("--source", "backfill", "--batch", "500", str(path))
    assert "1203 lines read, 1203 accepted" in output
    assert counted() == 1203


def test_invalid_utf8_and_nul_bytes_are_kept_replaced(source: LogSource) -> None:
    run("--source", "backfill", "-", stdin=io.BytesIO(b"bad \xff byte\nnul \x00 here\n"))
    assert counted() == 2


def test_a_missing_source_says_how_to_create_one(db: object, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="--create --service"):
        run("--source", "nowhere", str(tmp_path / "x.log"))


def test_create_makes_a_file_source(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_text("ready\n")
    output = run("--source", "demo-file", "--create", "--service", "shop", str(path))
    assert output.startswith("Created file source demo-file for service shop.")
    source = LogSource.objects.get(name="demo-file")
    assert (source.kind, source.service) == (LogSource.Kind.FILE, "shop")
    assert counted() == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "new", "--create", "x.log"], "--create needs --service"),
        (["--source", "bad name", "--create", "--service", "s", "x.log"], "not a valid source"),
        (["--source", "backfill", "/no/such/file.log"], "Cannot read /no/such/file.log"),
        (["--source", "backfill", "--batch", "0", "x.log"], "--batch must be at least 1"),
    ],
)
def test_bad_arguments_get_a_clear_error(source: LogSource, args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run(*args)
    assert LogSource.objects.count() == 1
