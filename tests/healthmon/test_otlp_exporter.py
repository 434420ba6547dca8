"""Real clients against a real server: the official OpenTelemetry Python SDK and its
OTLP/HTTP exporter (protobuf, gzip or not), and OTLP/JSON posted with httpx, to
`/v1/logs` of a daphne process (`live_server_url`). The server commits before it
answers, so these tests are transactional and read what it stored at once."""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExportResult
from opentelemetry.sdk.resources import Resource

from healthmon.ingest_keys import issue_key
from healthmon.levels import Level
from healthmon.models import Fingerprint, LogSource, Sample
from tests.controlplane.test_background import wait_for
from tests.healthmon.otlp_driver import json_request, record
from tests.live_server import live_server_url  # noqa: F401  (the fixture, for these tests)

pytestmark = pytest.mark.django_db(transaction=True)


class RecordingExporter(OTLPLogExporter):
    """The SDK's exporter, noting how each export went."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.results: list[LogRecordExportResult] = []

    def export(self, batch: Any) -> LogRecordExportResult:
        result = super().export(batch)
        self.results.append(result)
        return result


@pytest.fixture
def raw_key() -> str:
    source = LogSource.objects.create(name="billing", service="billing", kind=LogSource.Kind.OTLP)
    return issue_key(source, "billing pods")[1]


@pytest.fixture
def otel_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("tests.otlp.exporter")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    yield logger
    logger.handlers.clear()


def _exporting_logger(
    logger: logging.Logger, url: str, raw_key: str, compression: Compression
) -> tuple[LoggerProvider, RecordingExporter]:
    exporter = RecordingExporter(
        endpoint=f"{url}/v1/logs",
        headers={"Authorization": f"Bearer {raw_key}"},
        compression=compression,
        timeout=30,
    )
    provider = LoggerProvider(resource=Resource.create({"service.name": "invoicing"}))
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    logger.addHandler(LoggingHandler(logger_provider=provider))
    return provider, exporter


# The SDK's logging handler is deprecated in favour of a contrib package's; it still
# is what most Python services run, so it is what these tests push with.
@pytest.mark.filterwarnings("ignore:`LoggingHandler` in `opentelemetry-sdk` is deprecated")
@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_the_official_exporter_pushes_python_logs_over_protobuf(
    live_server_url: str,  # noqa: F811
    raw_key: str,
    otel_logger: logging.Logger,
    compression: Compression,
) -> None:
    provider, exporter = _exporting_logger(otel_logger, live_server_url, raw_key, compression)

    for number in range(20):
        otel_logger.info("invoice %d sent to customer %d", number, 1000 + number)
    otel_logger.warning("invoice queue at %d%%", 93)
    provider.shutdown()  # exports what is left, and waits for it

    assert exporter.results
    assert set(exporter.results) == {LogRecordExportResult.SUCCESS}
    invoices = Fingerprint.objects.get(service="invoicing", template__contains="sent to customer")
    assert (invoices.count, invoices.level) == (20, Level.INFO)
    queue = Fingerprint.objects.get(service="invoicing", level=Level.WARNING)
    assert queue.count == 1


# The only test of this module whose pushes make the server write audit events (a
# task opened): the server caches content type ids across the flushes between
# transactional tests (tests/live_server.py).
@pytest.mark.filterwarnings("ignore:`LoggingHandler` in `opentelemetry-sdk` is deprecated")
def test_an_exception_logged_through_the_exporter_groups_by_its_traceback_and_opens_a_task(
    live_server_url: str,  # noqa: F811
    raw_key: str,
    otel_logger: logging.Logger,
) -> None:
    provider, exporter = _exporting_logger(otel_logger, live_server_url, raw_key, Compression.Gzip)
    try:
        {}["customer"]
    except KeyError:
        otel_logger.exception("could not bill the customer")
    provider.shutdown()

    assert exporter.results == [LogRecordExportResult.SUCCESS]
    failure = Fingerprint.objects.get(service="invoicing", level=Level.ERROR)
    assert "KeyError" in failure.template
    assert "test_otlp_exporter.py" in failure.template  # a frame of the traceback
    sample = Sample.objects.get(fingerprint=failure)
    assert sample.attributes["log.body"] == "could not bill the customer"
    assert sample.attributes["exception.type"] == "KeyError"
    # The new error pattern opens a task in the server's background; waited for, so
    # the test's flush does not race it either.
    assert wait_for(lambda: Fingerprint.objects.filter(pk=failure.pk, task__isnull=False).exists())


@pytest.mark.parametrize("compress", [False, True])
def test_otlp_json_from_httpx_is_stored_and_answered_in_json(
    live_server_url: str,  # noqa: F811
    raw_key: str,
    compress: bool,
) -> None:
    document = json_request([record("export 1 done"), record("export 2 done"), record(None)])
    body = json.dumps(document).encode()
    headers = {"Content-Type": "application/json", "X-Ingest-Key": raw_key}
    if compress:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"

    response = httpx.post(f"{live_server_url}/v1/logs", content=body, headers=headers, timeout=30)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    partial = response.json()["partialSuccess"]
    assert partial["rejectedLogRecords"] == "1"
    assert Fingerprint.objects.get(service="checkout").count == 2
