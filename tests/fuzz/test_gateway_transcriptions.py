"""Fuzzing `POST /v1/audio/transcriptions`: any multipart form (well made or not, any
fields, any file), any raw body and any headers get an answer below 500, a 4xx is an
OpenAI-style JSON error, and afterwards the books are whole: no reservation held,
every reserved call logged, every cost a finite amount at or above zero; whatever
length of audio a provider reports.

Requests go through the gateway's ASGI application as daphne would send them
(`tests.routing.asgi_driver`), its logic in the test's transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.money import loads_exact
from routing.models import ServiceKey
from routing.models.catalog import CallKind
from routing.providers.transcription import Transcript, TranscriptionRequest, offline_transcript
from tests.fuzz.test_gateway import _assert_books_whole, _send, header_text, headers
from tests.routing import asgi_driver, factories
from tests.routing.audio_files import wav
from tests.scripted_providers import use_scripted

pytestmark = pytest.mark.django_db

TRANSCRIBE = "POST /v1/audio/transcriptions"
MISREPORTED = "POST /v1/audio/transcriptions (misreporting provider)"
URL = "/v1/audio/transcriptions"
BOUNDARY = "fuzzboundary"
OPERATIONS = ["transcribe", "heard", "no-such-operation"]


class Hearing:
    """A transcription provider that reports whatever length of audio it likes."""

    label = "hearing"

    def __init__(self, seconds: Any = None) -> None:
        self.seconds = seconds

    def transcribe(self, request: TranscriptionRequest) -> Transcript:
        transcript = offline_transcript(request)
        transcript.seconds = self.seconds
        return transcript


@pytest.fixture
def raw_key(db: Any) -> Iterator[str]:
    """A key whose default is the seeded `transcribe` route (the offline model), and a
    priced transcription route (`heard`) under a global budget of $100 a day."""
    provider = factories.provider(name="fuzzed-listener")
    priced = factories.model(
        provider,
        "fuzz/listener",
        prompt=None,
        completion=None,
        kind=CallKind.TRANSCRIPTION,
        price_audio_second=Decimal("0.0001"),
    )
    factories.route("heard", priced)
    factories.budget("100")
    _, raw = ServiceKey.issue(name="fuzzer", service="fuzzing", default_operation="transcribe")
    with use_scripted("fuzzed-listener", Hearing()):
        yield raw


# -- what is sent ---------------------------------------------------------------------

audio_files = st.one_of(
    st.decimals(min_value="0.01", max_value=3, places=2).map(wav),
    st.binary(max_size=64),
    st.just(wav(1)[:30]),  # a header cut short
    st.just(b"RIFF\xff\xff\xff\xffWAVEfmt "),
)
field_values = st.one_of(
    st.sampled_from(
        ["whisper-1", "json", "text", "srt", "vtt", "verbose_json", "xml", "word", "segment"]
    ),
    st.sampled_from(["0", "0.5", "1", "-1", "2", "NaN", "Infinity", "1e400", "", "true"]),
    st.text(max_size=40),
).map(str.encode) | st.binary(max_size=40)
field_names = st.sampled_from(
    [
        "model",
        "response_format",
        "language",
        "prompt",
        "temperature",
        "timestamp_granularities[]",
        "stream",
        "chunking_strategy",
    ]
) | st.text(max_size=12)


def mostly(valid: st.SearchStrategy[Any], weird: st.SearchStrategy[Any]) -> Any:
    """Valid five times in six (a sampled flag: `one_of` leans to its weirder branch)."""
    return st.sampled_from(range(6)).flatmap(lambda n: valid if n else weird)


@st.composite
def forms(draw: st.DrawFn) -> tuple[str, bytes]:
    """A multipart body and its Content-Type, each part valid five times in six, so
    that whole requests reach the call path often enough."""
    parts: list[bytes] = []
    if draw(st.sampled_from(range(6))):
        parts.append(_part(b"model", draw(mostly(st.just(b"whisper-1"), field_values))))
    if draw(st.sampled_from(range(3))) == 0:
        response_format = st.sampled_from([b"json", b"text", b"srt", b"vtt", b"verbose_json"])
        parts.append(_part(b"response_format", draw(mostly(response_format, field_values))))
    for name, value in draw(mostly(st.just([]), st.lists(st.tuples(field_names, field_values)))):
        parts.append(_part(name.encode(errors="replace"), value))
    if draw(st.sampled_from(range(6))):
        filename = draw(mostly(st.just("meeting.wav"), header_text))
        parts.append(
            _part(
                b"file",
                draw(
                    mostly(
                        st.decimals(min_value="0.01", max_value=3, places=2).map(wav), audio_files
                    )
                ),
                filename=filename.encode("latin-1", errors="replace"),
                content_type=draw(st.sampled_from([b"audio/wav", b"", b"text/plain"])),
            )
        )
    ending = draw(mostly(st.just(b"--%s--\r\n" % BOUNDARY.encode()), st.sampled_from([b"", b"--"])))
    content_type = draw(
        mostly(
            st.just(f"multipart/form-data; boundary={BOUNDARY}"),
            st.sampled_from(
                [
                    f'multipart/form-data; boundary="{BOUNDARY}"',
                    "multipart/form-data",
                    "application/json",
                ]
            )
            | header_text,
        )
    )
    return content_type, b"".join(parts) + ending


def _part(
    name: bytes, value: bytes, *, filename: bytes | None = None, content_type: bytes = b""
) -> bytes:
    disposition = b'form-data; name="%s"' % name.replace(b'"', b"")
    if filename is not None:
        disposition += b'; filename="%s"' % filename.replace(b'"', b"").replace(b"\r\n", b"")
    head = b"--%s\r\nContent-Disposition: %s\r\n" % (BOUNDARY.encode(), disposition)
    if content_type:
        head += b"Content-Type: %s\r\n" % content_type
    return head + b"\r\n" + value + b"\r\n"


def _assert_well_answered(answer: asgi_driver.Client) -> None:
    assert answer.finished, "the answer was never ended"
    assert answer.status < 500, answer.body[:500]
    content_type = answer.headers["content-type"]
    if answer.status >= 400:
        error = answer.error()
        assert isinstance(error["message"], str)
        assert error["message"]
        assert error["type"]
        assert "code" in error
    elif content_type == "application/json":
        assert isinstance(loads_exact(answer.body)["text"], str)
    else:
        assert content_type == "text/plain; charset=utf-8"
        answer.body.decode()


@given(data=st.data(), form=forms())
def test_transcriptions_never_fail_and_leave_the_books_whole(
    raw_key: str, data: st.DataObject, form: tuple[str, bytes]
) -> None:
    content_type, body = form
    sent_headers = {**data.draw(headers(raw_key)), "Content-Type": content_type}
    operation = data.draw(st.sampled_from([None, *OPERATIONS]), label="X-Operation")
    if operation is not None:
        sent_headers["X-Operation"] = operation
    answer = _send(TRANSCRIBE, "POST", URL, sent_headers, body)
    _assert_well_answered(answer)
    _assert_books_whole()


@given(data=st.data(), body=st.binary(max_size=300))
def test_a_raw_body_gets_a_json_error(raw_key: str, data: st.DataObject, body: bytes) -> None:
    sent_headers = {
        **data.draw(headers(raw_key)),
        "Content-Type": data.draw(
            st.sampled_from([f"multipart/form-data; boundary={BOUNDARY}", "audio/wav"])
        ),
    }
    answer = _send(TRANSCRIBE, "POST", URL, sent_headers, body)
    _assert_well_answered(answer)
    assert answer.status >= 400
    _assert_books_whole()


@given(
    seconds=st.none()
    | st.decimals(allow_nan=True, allow_infinity=True)
    | st.decimals(min_value=0, max_value=10, places=3),
    response_format=st.sampled_from(["json", "text", "srt", "vtt", "verbose_json"]),
)
def test_whatever_length_a_provider_reports_the_books_stay_whole(
    raw_key: str, seconds: Decimal | None, response_format: str
) -> None:
    body = (
        _part(b"model", b"whisper-1")
        + _part(b"response_format", response_format.encode())
        + _part(b"file", wav(2), filename=b"a.wav", content_type=b"audio/wav")
        + b"--%s--\r\n" % BOUNDARY.encode()
    )
    sent_headers = {
        "Authorization": f"Bearer {raw_key}",
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        "X-Operation": "heard",
    }
    with use_scripted("fuzzed-listener", Hearing(seconds)):
        answer = _send(MISREPORTED, "POST", URL, sent_headers, body)
    _assert_well_answered(answer)
    assert answer.status == 200
    cost = Decimal(answer.headers["x-cost-usd"])
    assert cost.is_finite()
    assert 0 < cost <= Decimal("0.0001") * 5
    _assert_books_whole()
