"""Fuzzing the OTLP/HTTP log receiver: any body, content type, encoding and key sent
to `POST /v1/logs` gets an answer below 500 (a 4xx carries a google.rpc.Status with
a message), and what was stored stays whole: every record counted under a
fingerprint is counted in its service's minute too.

Requests go through the receiver's ASGI application as daphne would send them
(`tests.healthmon.otlp_driver`), its work in the test's transaction.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from django.db.models import Sum
from google.rpc.status_pb2 import Status
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from healthmon.ingest_keys import issue_key
from healthmon.models import Fingerprint, LogSource, ServiceMinute
from healthmon.shared_grouper import shared_grouper
from tests.fuzz.conftest import record_status
from tests.healthmon.otlp_driver import JSON, PROTOBUF, post

pytestmark = pytest.mark.django_db

LOGS = "POST /v1/logs"
LOGS_STRUCTURED = "POST /v1/logs (OTLP-shaped JSON)"


@pytest.fixture
def raw_key(db: Any) -> str:
    shared_grouper.forget()
    source = LogSource.objects.create(name="fuzzed", service="fuzzed", kind=LogSource.Kind.OTLP)
    return issue_key(source, "fuzzer")[1]


def assert_answered(client: Any) -> None:
    assert client.status < 500, client.body
    if client.status == 200:
        if client.headers["content-type"] == PROTOBUF:
            ExportLogsServiceResponse.FromString(client.body)
        else:
            assert isinstance(json.loads(client.body), dict)
        return
    if client.headers["content-type"] == PROTOBUF:
        assert Status.FromString(client.body).message
    else:
        assert json.loads(client.body)["message"]


def assert_counts_whole() -> None:
    counted = Fingerprint.objects.aggregate(total=Sum("count"))["total"] or 0
    minutes = ServiceMinute.objects.aggregate(total=Sum("records"))["total"] or 0
    assert counted == minutes


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
any_values = st.recursive(
    st.one_of(
        st.fixed_dictionaries({"stringValue": st.text(max_size=60) | scalars}),
        st.fixed_dictionaries({"intValue": st.integers() | st.text(max_size=22) | scalars}),
        st.fixed_dictionaries({"doubleValue": st.floats() | st.sampled_from(["NaN", "x"])}),
        st.fixed_dictionaries({"boolValue": scalars}),
        st.fixed_dictionaries({"bytesValue": scalars}),
        json_values,
    ),
    lambda inner: (
        st.fixed_dictionaries(
            {"arrayValue": st.fixed_dictionaries({"values": st.lists(inner, max_size=3)})}
        )
        | st.fixed_dictionaries(
            {
                "kvlistValue": st.fixed_dictionaries(
                    {
                        "values": st.lists(
                            st.fixed_dictionaries({"key": st.text(max_size=8), "value": inner}),
                            max_size=3,
                        )
                    }
                )
            }
        )
    ),
    max_leaves=10,
)
attribute_lists = st.lists(
    st.fixed_dictionaries(
        {
            "key": st.sampled_from(
                [
                    "service.name",
                    "http.status_code",
                    "http.response.status_code",
                    "exception.stacktrace",
                    "exception.type",
                ]
            )
            | st.text(max_size=10)
            | scalars,
            "value": any_values,
        }
    ),
    max_size=4,
)
log_records = st.fixed_dictionaries(
    {},
    optional={
        "body": any_values,
        "severityNumber": st.integers(min_value=-5, max_value=40)
        | st.sampled_from(["SEVERITY_NUMBER_ERROR", "LOUD"])
        | scalars,
        "severityText": st.sampled_from(["ERROR", "warn", "fatal", "bogus"]) | scalars,
        "timeUnixNano": st.integers(min_value=-1, max_value=2**65).map(str) | scalars,
        "observedTimeUnixNano": st.integers(min_value=0, max_value=2**64 - 1).map(str),
        "traceId": st.sampled_from(["5b8efff798038103d269b633813fc60c", "zz", ""]) | scalars,
        "attributes": attribute_lists | scalars,
    },
)
requests = st.fixed_dictionaries(
    {
        "resourceLogs": st.lists(
            st.fixed_dictionaries(
                {
                    "resource": st.fixed_dictionaries({"attributes": attribute_lists})
                    | json_values,
                    "scopeLogs": st.lists(
                        st.fixed_dictionaries(
                            {"logRecords": st.lists(log_records, max_size=5) | json_values}
                        ),
                        max_size=2,
                    ),
                }
            ),
            max_size=2,
        )
        | json_values
    }
)


@given(
    body=st.binary(max_size=300),
    content_type=st.sampled_from(
        [JSON, PROTOBUF, "text/plain", "", "application/json; charset=utf-8"]
    ),
    encoding=st.sampled_from(["", "gzip", "identity", "deflate", "GZIP"]),
    key_header=st.sampled_from(["Authorization", "X-Ingest-Key", "authorization", None]),
    gzip_it=st.booleans(),
)
def test_any_bytes_get_an_answer_below_500(
    raw_key: str,
    body: bytes,
    content_type: str,
    encoding: str,
    key_header: str | None,
    gzip_it: bool,
) -> None:
    headers = {"Content-Encoding": encoding} if encoding else {}
    if key_header is not None:
        headers[key_header] = (
            f"Bearer {raw_key}" if key_header.lower() == "authorization" else raw_key
        )
    sent = gzip.compress(body) if gzip_it else body
    client = post(sent, content_type=content_type, headers=headers)
    record_status(LOGS, client.status)
    assert_answered(client)
    assert_counts_whole()


@given(document=requests, compress=st.booleans())
def test_otlp_shaped_json_gets_an_answer_below_500(
    raw_key: str, document: dict[str, Any], compress: bool
) -> None:
    body = json.dumps(document).encode()
    headers = {"X-Ingest-Key": raw_key}
    if compress:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    client = post(body, headers=headers)
    record_status(LOGS_STRUCTURED, client.status)
    assert_answered(client)
    assert_counts_whole()
