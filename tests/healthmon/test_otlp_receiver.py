"""`POST /v1/logs` in-process: what each encoding stores, the answers OTLP expects
(partial success, a google.rpc.Status on failure), and every kind of bad input."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from controlplane.models import AuditEvent
from healthmon.ingest_keys import issue_key, revoke_key
from healthmon.levels import Level
from healthmon.models import Fingerprint, IngestKey, LogSource, Sample, ServiceMinute
from healthmon.otlp import flood
from tests.healthmon.otlp_driver import (
    PROTOBUF,
    encoded,
    json_request,
    post,
    record,
)

pytestmark = pytest.mark.django_db


def now_nanos() -> str:
    return str(int(datetime.now(UTC).timestamp() * 1e9))


@pytest.fixture
def source() -> LogSource:
    return LogSource.objects.create(name="shop", service="shop", kind=LogSource.Kind.OTLP)


@pytest.fixture
def key(source: LogSource) -> str:
    return issue_key(source, "shop pods")[1]


def stored_records() -> int:
    return sum(Fingerprint.objects.values_list("count", flat=True))


def status_of(client: Any) -> dict[str, Any]:
    assert client.headers["content-type"] == "application/json"
    return json.loads(client.body)


def test_a_json_batch_is_grouped_and_counted_under_each_records_service(key: str) -> None:
    at = now_nanos()
    document = json_request(
        [
            record("user 42 logged in", timeUnixNano=at),
            record("user 43 logged in", timeUnixNano=at),
            record(
                "GET /cart failed",
                severity=17,
                attributes=[{"key": "http.response.status_code", "value": {"intValue": "503"}}],
                traceId="5B8EFFF798038103D269B633813FC60C",
                timeUnixNano=at,
            ),
        ],
        service="checkout",
    )
    document["resourceLogs"].append(
        json_request([record("queue drained")], service=None)["resourceLogs"][0]
    )

    client = post(encoded(document), key=key)

    assert client.status == 200
    assert status_of(client) == {}
    login = Fingerprint.objects.get(service="checkout", template__contains="logged in")
    assert login.count == 2
    assert login.level == Level.INFO
    failed = Fingerprint.objects.get(service="checkout", template__contains="failed")
    assert failed.level == Level.ERROR
    sample = Sample.objects.get(fingerprint=failed)
    assert sample.attributes["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert sample.attributes["service.name"] == "checkout"
    # No service.name: the source's service.
    assert Fingerprint.objects.get(service="shop").count == 1
    minute = ServiceMinute.objects.get(service="checkout")
    assert (minute.records, minute.http_requests, minute.http_5xx) == (3, 1, 1)
    assert LogSource.objects.get().last_ingest_at is not None


def test_a_gzip_json_batch_is_read(key: str) -> None:
    client = post(
        encoded(json_request([record("cache warmed")]), compress=True),
        key=key,
        headers={"Content-Encoding": "gzip"},
        chunks=3,
    )
    assert client.status == 200
    assert Fingerprint.objects.get().count == 1


def _protobuf_request(*messages: str, service: str = "payments") -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.append(
        KeyValue(key="service.name", value=AnyValue(string_value=service))
    )
    scope_logs = resource_logs.scope_logs.add()
    for message in messages:
        log = scope_logs.log_records.add()
        log.severity_text = "WARN"
        log.observed_time_unix_nano = int(now_nanos())
        if message:
            log.body.string_value = message
    return request


def test_a_protobuf_batch_is_answered_in_protobuf(key: str) -> None:
    body = _protobuf_request("card 1 declined", "card 2 declined").SerializeToString()
    client = post(
        gzip.compress(body), key=key, content_type=PROTOBUF, headers={"Content-Encoding": "gzip"}
    )

    assert client.status == 200
    assert client.headers["content-type"] == PROTOBUF
    answer = ExportLogsServiceResponse.FromString(client.body)
    assert not answer.HasField("partial_success")
    declined = Fingerprint.objects.get(service="payments")
    assert (declined.count, declined.level) == (2, Level.WARNING)


def test_records_without_a_body_are_rejected_and_the_rest_kept(key: str) -> None:
    body = _protobuf_request("card 1 declined", "", "card 3 declined").SerializeToString()
    client = post(body, key=key, content_type=PROTOBUF)

    answer = ExportLogsServiceResponse.FromString(client.body)
    assert client.status == 200
    assert answer.partial_success.rejected_log_records == 1
    assert "no message body" in answer.partial_success.error_message
    assert stored_records() == 2


def test_an_unreadable_json_record_is_rejected_alone_with_where_it_is(key: str) -> None:
    document = json_request(
        [record("fine one"), record("bad time", timeUnixNano="yesterday"), record(None)]
    )
    client = post(encoded(document), key=key)

    answer = status_of(client)
    assert client.status == 200
    assert answer["partialSuccess"]["rejectedLogRecords"] == "2"
    message = answer["partialSuccess"]["errorMessage"]
    assert "logRecords[1]: timeUnixNano must be an integer" in message
    assert "no message body" in message
    assert stored_records() == 1


def test_an_exception_groups_by_its_stacktrace_and_keeps_the_body(key: str) -> None:
    trace = 'Traceback (most recent call last):\n  File "app.py", line 3, in pay\nKeyError: 7'
    exception = [
        {"key": "exception.type", "value": {"stringValue": "KeyError"}},
        {"key": "exception.stacktrace", "value": {"stringValue": trace}},
    ]
    only_type = [{"key": "exception.type", "value": {"stringValue": "TimeoutError"}}]
    document = json_request(
        [
            record("payment failed", severity=17, attributes=exception),
            record(None, severity=17, attributes=only_type),
        ]
    )
    assert post(encoded(document), key=key).status == 200

    traceback_group = Fingerprint.objects.get(template__contains="KeyError")
    assert "app.py" in traceback_group.template
    assert (
        Sample.objects.get(fingerprint=traceback_group).attributes["log.body"] == "payment failed"
    )
    assert Fingerprint.objects.filter(template__contains="TimeoutError").exists()


def test_a_structured_body_is_stored_as_compact_json(key: str) -> None:
    document = json_request([record({"event": "paid", "ok": True, "tries": [1, 2]})])
    assert post(encoded(document), key=key).status == 200
    sample = Sample.objects.get()
    assert sample.message == '{"event":"paid","ok":true,"tries":[1,2]}'


def test_nul_bytes_and_far_timestamps_are_stored_cleaned_and_counted_now(key: str) -> None:
    far_future = str(int((timezone.now() + timedelta(days=3650)).timestamp() * 1e9))
    document = json_request(
        [
            record("nul \u0000 inside", timeUnixNano=far_future),
            record("very old", timeUnixNano="1"),
            record("past year 9999", timeUnixNano=str(2**64 - 1)),
        ]
    )
    client = post(encoded(document), key=key)

    assert client.status == 200
    assert stored_records() == 3
    nul = Sample.objects.get(message__contains="nul")
    assert "\x00" not in nul.message
    assert nul.attributes["original_timestamp"].startswith(str(timezone.now().year + 9)[:3])
    assert all(sample.at <= timezone.now() for sample in Sample.objects.all())


@pytest.mark.parametrize(
    ("body", "encoding", "says"),
    [
        (b"{not json", "", "not JSON"),
        (b'["a list"]', "", "must be an object"),
        (b'{"resourceLogs": {"x": 1}}', "", "resourceLogs must be a list of objects"),
        (b'{"resourceLogs": [{"scopeLogs": "x"}]}', "", "resourceLogs[0].scopeLogs"),
        ('{"resourceLogs": []}'.encode("utf-16")[:-1] + b"\xff\xfe\xff", "", "JSON"),
        (b'{"resourceLogs": [], "x": "\xc3\x28"}', "", "not valid UTF-8"),
        (b"not gzip at all", "gzip", "gzip body is corrupt"),
        (gzip.compress(b'{"resourceLogs": []}')[:-6], "gzip", "truncated"),
        (b"[" * 100_000, "", "JSON body nests too deeply"),
    ],
)
def test_a_malformed_json_body_is_a_400_saying_why(
    key: str, body: bytes, encoding: str, says: str
) -> None:
    client = post(body, key=key, headers={"Content-Encoding": encoding} if encoding else None)
    assert client.status == 400
    answer = status_of(client)
    assert says in answer["message"]
    assert answer["code"] == 3  # INVALID_ARGUMENT
    assert not Fingerprint.objects.exists()


def test_a_malformed_protobuf_body_is_a_400_status_in_protobuf(key: str) -> None:
    client = post(b"\x0a\xff\xff\xff\xff\x0f", key=key, content_type=PROTOBUF)
    assert client.status == 400
    assert client.headers["content-type"] == PROTOBUF
    status = Status.FromString(client.body)
    assert status.code == 3
    assert "not a protobuf ExportLogsServiceRequest" in status.message


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer cplog_000000000000_nope"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"X-Ingest-Key": "not-a-key"},
    ],
)
def test_no_or_an_unknown_key_is_a_401(headers: dict[str, str], source: LogSource) -> None:
    client = post(encoded(json_request([record()])), headers=headers)
    assert client.status == 401
    assert client.headers["www-authenticate"] == "Bearer"
    assert "ingest key is required" in status_of(client)["message"]
    assert not Fingerprint.objects.exists()


def test_a_revoked_key_is_a_401_and_the_revocation_is_audited(source: LogSource) -> None:
    ingest_key, raw = issue_key(source, "old pods")
    assert revoke_key(ingest_key)
    assert post(encoded(json_request([record()])), key=raw).status == 401
    assert not Fingerprint.objects.exists()
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"ingest_key.created", "ingest_key.revoked"} <= actions


def test_the_key_header_of_an_exporter_works_and_marks_the_key_used(
    source: LogSource, key: str
) -> None:
    client = post(encoded(json_request([record()])), headers={"X-Ingest-Key": key})
    assert client.status == 200
    used = IngestKey.objects.get().last_used_at
    assert used is not None
    post(encoded(json_request([record()])), headers={"X-Ingest-Key": key})
    assert IngestKey.objects.get().last_used_at == used  # at most once a minute


def test_a_disabled_source_is_refused(source: LogSource, key: str) -> None:
    LogSource.objects.filter(pk=source.pk).update(enabled=False)
    client = post(encoded(json_request([record()])), key=key)
    assert client.status == 403
    assert "disabled" in status_of(client)["message"]


def test_a_body_over_the_limit_is_a_413_as_sent(key: str) -> None:
    # A 10 MB batch against the default limit of 8 MB.
    filler = "x" * 1000
    document = json_request([record(f"line {n} {filler}") for n in range(10_000)])
    client = post(encoded(document), key=key, chunks=40)
    assert client.status == 413
    assert "HEALTHMON_OTLP_MAX_BYTES" in status_of(client)["message"]
    assert not Fingerprint.objects.exists()


def test_a_gzip_bomb_is_a_413_without_inflating_it_all(key: str, settings: Any) -> None:
    settings.HEALTHMON_OTLP_MAX_BYTES = 100_000
    bomb = gzip.compress(b'{"resourceLogs": [' + b" " * 50_000_000 + b"]}")
    assert len(bomb) < 100_000
    client = post(bomb, key=key, headers={"Content-Encoding": "gzip"})
    assert client.status == 413


def test_an_unsupported_content_type_or_encoding_is_a_415(key: str) -> None:
    text = post(b"hello", key=key, content_type="text/plain")
    assert text.status == 415
    assert "application/x-protobuf or application/json" in status_of(text)["message"]
    brotli = post(b"hello", key=key, headers={"Content-Encoding": "br"})
    assert brotli.status == 415
    assert "Content-Encoding br" in status_of(brotli)["message"]


def test_only_post_is_answered(key: str) -> None:
    client = post(b"", key=key, method="GET")
    assert client.status == 405
    assert client.headers["allow"] == "POST"
    assert client.headers["x-content-type-options"] == "nosniff"  # as every page


def test_a_host_not_allowed_is_refused_before_anything_else(key: str) -> None:
    client = post(encoded(json_request([record()])), key=key, headers={"Host": "evil.example"})
    assert client.status == 400
    assert "ALLOWED_HOSTS" in status_of(client)["message"]
    assert not Fingerprint.objects.exists()


def test_a_flooding_source_gets_429_with_retry_after_and_nothing_stored(
    key: str, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.HEALTHMON_OTLP_RECORDS_PER_SECOND = 5
    now = [1_000_000.5 + timezone.now().timestamp()]  # a second of this test's own
    monkeypatch.setattr(flood, "clock", lambda: now[0])

    def push(count: int) -> Any:
        return post(encoded(json_request([record(f"burst {n}") for n in range(count)])), key=key)

    assert push(4).status == 200
    refused = push(2)
    assert refused.status == 429
    assert refused.headers["retry-after"] == "1"
    assert "HEALTHMON_OTLP_RECORDS_PER_SECOND" in status_of(refused)["message"]
    assert push(1).status == 200  # what is left of the second's allowance
    now[0] += 1
    assert push(12).status == 200  # a batch over the allowance passes first in its second
    assert stored_records() == 4 + 1 + 12
