"""The upload an OpenAI-compatible upstream gets for a transcription
(`routing.providers.transcription.upload_body`): byte for byte what httpx encodes for
the same form, and read back by the gateway's own parser as what was sent."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from python_multipart.multipart import parse_options_header

from routing.gateway_requests import InvalidRequest
from routing.providers.transcription import TranscriptionRequest, upload_body
from routing.transcription_requests import (
    _options,
    _parsed_parts,
    _plain_options,
    _plain_parts,
    parse_transcription_request,
)
from tests.routing.audio_files import wav

BOUNDARY = "0123456789abcdef0123456789abcdef"


def by_httpx(request: TranscriptionRequest) -> bytes:
    """The form as httpx encodes it (`data=`, `files=`), under the same boundary."""
    fields: dict[str, Any] = {"model": request.model, "response_format": request.response_format}
    for name in ("language", "prompt", "temperature"):
        if getattr(request, name):
            fields[name] = getattr(request, name)
    if request.timestamp_granularities:
        fields["timestamp_granularities[]"] = list(request.timestamp_granularities)
    for name, value in request.extra:
        fields.setdefault(name, value)
    upload = httpx.Request(
        "POST",
        "http://upload.invalid/",
        data=fields,
        files={"file": (request.filename, request.audio, request.content_type)},
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    return upload.read()


# Any text: quotes, backslashes, control characters, line breaks, any script.
texts = st.text(max_size=20)
requests = st.builds(
    TranscriptionRequest,
    model=texts,
    audio=st.binary(max_size=64),
    filename=texts,
    content_type=st.sampled_from(["audio/wav", "audio/mpeg", ""]),
    seconds=st.just(Decimal(1)),
    response_format=st.sampled_from(["json", "text", "verbose_json"]),
    language=texts,
    prompt=texts,
    temperature=st.sampled_from(["", "0", "0.5"]),
    timestamp_granularities=st.lists(st.sampled_from(["word", "segment"]), max_size=2).map(tuple),
    extra=st.dictionaries(texts, texts, max_size=3).map(lambda extra: tuple(extra.items())),
)


@given(request=requests)
def test_the_upload_is_byte_for_byte_what_httpx_encodes(request: TranscriptionRequest) -> None:
    body, content_type = upload_body(request, BOUNDARY)
    assert content_type == f"multipart/form-data; boundary={BOUNDARY}"
    assert body == by_httpx(request)


def test_each_upload_has_a_boundary_of_its_own() -> None:
    request = TranscriptionRequest(
        model="whisper-1",
        audio=wav("1"),
        filename="a.wav",
        content_type="audio/wav",
        seconds=Decimal(1),
    )
    (first, first_type), (_, second_type) = upload_body(request), upload_body(request)
    assert first_type != second_type
    boundary = first_type.split("boundary=")[1]
    assert len(boundary) == 32
    assert first.startswith(f"--{boundary}\r\n".encode())


def test_the_gateway_reads_back_what_it_uploads() -> None:
    request = TranscriptionRequest(
        model="whisper-1",
        audio=wav("1.5"),
        filename='my "notes".wav',
        content_type="audio/wav",
        seconds=Decimal("1.5"),
        response_format="verbose_json",
        language="de",
        prompt="Names: Ana, Bo",
        temperature="0.2",
        timestamp_granularities=("word", "segment"),
        extra=(("user", "u-1"),),
    )
    body, content_type = upload_body(request)
    read = parse_transcription_request(content_type, body)
    assert read.model == "whisper-1"
    assert read.audio == request.audio
    assert read.filename == "my %22notes%22.wav"  # quoted as browsers and httpx quote it
    assert read.seconds == Decimal("1.500")
    assert (read.response_format, read.language, read.prompt, read.temperature) == (
        "verbose_json",
        "de",
        "Names: Ana, Bo",
        "0.2",
    )
    assert read.timestamp_granularities == ("word", "segment")
    assert read.extra == (("user", "u-1"),)


# -- reading a form: the plain path and python-multipart's parser agree ----------------

token = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!#$%&'*+^`|~",
    min_size=1,
    max_size=20,
)
header_values = st.binary(max_size=40).filter(lambda v: b"\r" not in v and b"\n" not in v)
forms = st.tuples(
    token.map(str.encode),  # the boundary
    st.lists(
        st.tuples(
            st.lists(st.tuples(token.map(str.encode), header_values), max_size=4),
            st.binary(max_size=60),
        ),
        max_size=5,
    ),
    st.sampled_from([b"--", b"--\r\n"]),
)


def written(
    boundary: bytes, parts: list[tuple[list[tuple[bytes, bytes]], bytes]], end: bytes
) -> bytes:
    body = b""
    for headers, data in parts:
        lines = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        body += b"--" + boundary + b"\r\n" + lines + b"\r\n" + data + b"\r\n"
    return body + b"--" + boundary + end


def by_parser(boundary: bytes, body: bytes) -> Any:
    try:
        return [(p.headers, b"".join(p.data), p.size) for p in _parsed_parts(boundary, body)]
    except InvalidRequest as exc:
        return exc


def by_plain_path(boundary: bytes, body: bytes) -> Any:
    parts = _plain_parts(boundary, body)
    return None if parts is None else [(p.headers, b"".join(p.data), p.size) for p in parts]


@given(form=forms)
def test_a_plainly_written_form_is_read_as_the_parser_reads_it(form: Any) -> None:
    boundary, parts, end = form
    body = written(boundary, parts, end)
    if any(b"\r\n--" + boundary in b"\r\n" + data + b"\r\n" for _, data in parts):
        return  # the boundary inside a part's data: not a form any client writes
    assert by_plain_path(boundary, body) == by_parser(boundary, body)


@given(form=forms, cut=st.integers(min_value=0), insert=st.binary(min_size=1, max_size=4))
def test_a_mangled_form_is_read_as_the_parser_reads_it_or_left_to_the_parser(
    form: Any, cut: int, insert: bytes
) -> None:
    boundary, parts, end = form
    body = written(boundary, parts, end)
    at = cut % (len(body) + 1)
    for mangled in (body[:at], body[:at] + insert + body[at:], body[:at] + body[at + 1 :]):
        plain = by_plain_path(boundary, mangled)
        if plain is not None:
            assert plain == by_parser(boundary, mangled)


def test_a_boundary_longer_than_the_parser_takes_is_a_400_naming_the_file() -> None:
    boundary = "b" * 300
    disposition = 'Content-Disposition: form-data; name="model"'
    body = f"--{boundary}\r\n{disposition}\r\n\r\nm\r\n--{boundary}--\r\n"
    with pytest.raises(InvalidRequest) as refused:
        parse_transcription_request(f"multipart/form-data; boundary={boundary}", body.encode())
    assert (str(refused.value), refused.value.param) == (
        "The multipart boundary is over 256 bytes.",
        "file",
    )


@given(request=requests)
def test_the_forms_httpx_writes_are_read_by_the_plain_path(request: TranscriptionRequest) -> None:
    body = by_httpx(request)
    assert by_plain_path(BOUNDARY.encode(), body) == by_parser(BOUNDARY.encode(), body)
    assert by_plain_path(BOUNDARY.encode(), body) is not None


# -- a header's value and parameters: the plain path and python-multipart agree ---------

plain_values = st.builds(
    lambda kind, parameters: kind + "".join(f"; {name}={value}" for name, value in parameters),
    st.from_regex(r"[A-Za-z0-9_.+/-]+", fullmatch=True),
    st.lists(
        st.tuples(
            st.from_regex(r"[a-z]+", fullmatch=True),
            st.from_regex(r"[A-Za-z0-9_.+-]+", fullmatch=True)
            | st.text(st.characters(max_codepoint=255, exclude_characters='"\\;')).map(
                lambda text: f'"{text}"'
            ),
        ),
        max_size=3,
    ),
)


@given(value=plain_values)
def test_a_plainly_written_header_is_read_as_python_multipart_reads_it(value: str) -> None:
    assert _plain_options(value) is not None
    assert _options(value) == parse_options_header(value)
    assert _options(value.encode("latin-1")) == parse_options_header(value)


@given(value=plain_values | st.text(st.characters(max_codepoint=255), max_size=40))
def test_any_header_is_read_as_python_multipart_reads_it(value: str) -> None:
    assert _options(value) == parse_options_header(value)
