"""What `POST /v1/audio/transcriptions` accepts: OpenAI's multipart upload, checked
before anything is reserved, so bad input is a 400 naming the field (OpenAI's
`param`) rather than a failure deeper in.

The body is parsed by python-multipart's parser (the one Starlette uses); its size is
bounded before it gets here (`GATEWAY_TRANSCRIPTION_MAX_BYTES`, a 413). The file
must be audio (or video) whose length `mutagen` reads from its header: that length is
what the call is reserved at. Text fields are UTF-8 without NUL (PostgreSQL's text
refuses it) and short; `timestamp_granularities[]` may repeat; a field the gateway
does not know is passed on to an OpenAI-compatible upstream as sent.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import (
    DEFAULT_MAX_HEADER_COUNT,
    MAX_BOUNDARY_LENGTH,
    MultipartParser,
    parse_options_header,
)

from routing.gateway_requests import InvalidRequest
from routing.media import UnreadableMedia, duration_seconds
from routing.models import OperationLog
from routing.providers.transcription import (
    RESPONSE_FORMATS,
    TIMESTAMP_GRANULARITIES,
    TranscriptionRequest,
)

MAX_FIELD_BYTES = 64 * 1024  # a prompt is a few hundred words
MAX_PARTS = 32
MAX_FILENAME_CHARS = 255
# A header line the plain path reads (`_plain_parts`): under python-multipart's limit.
MAX_HEADER_LINE = 4096
_MEDIA_TYPE = re.compile(rb"[\w.+-]+/[\w.+-]+", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
GRANULARITIES_FIELD = "timestamp_granularities[]"
# Fields OpenAI's endpoint takes that the gateway cannot honour: a 400 naming them.
REFUSED = {"stream": "Streamed transcriptions are not supported; leave out 'stream'."}


@dataclass
class _Part:
    headers: dict[str, bytes] = field(default_factory=dict)
    data: list[bytes] = field(default_factory=list)
    size: int = 0


@dataclass
class _Form:
    parts: list[_Part] = field(default_factory=list)
    ended: bool = False
    header_name: list[bytes] = field(default_factory=list)
    header_value: list[bytes] = field(default_factory=list)


def parse_transcription_request(content_type: str, body: bytes) -> TranscriptionRequest:
    """The request's file and choices; raises `InvalidRequest` naming the field at fault."""
    kind, options = _options(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise InvalidRequest(
            "The body must be multipart/form-data with the audio as 'file', as OpenAI's "
            "/v1/audio/transcriptions takes it.",
            param="file",
        )
    fields, files = _read_form(boundary, body)
    upload = files.get("file")
    if upload is None:
        raise InvalidRequest("'file' is required: the audio file to transcribe.", param="file")
    filename, file_type, audio = upload
    model = _text(fields, "model")
    if not model:
        raise InvalidRequest("'model' is required: the model to transcribe with.", param="model")
    most = OperationLog._meta.get_field("model_requested").max_length or 0
    if len(model) > most:
        raise InvalidRequest(f"'model' is longer than {most} characters.", param="model")
    response_format = _text(fields, "response_format") or "json"
    if response_format not in RESPONSE_FORMATS:
        raise InvalidRequest(
            f"'response_format' must be one of {', '.join(RESPONSE_FORMATS)}, "
            f"not '{response_format[:40]}'.",
            param="response_format",
        )
    granularities = tuple(fields.get(GRANULARITIES_FIELD, []))
    _check_granularities(granularities, response_format)
    for name, message in REFUSED.items():
        if _text(fields, name) not in ("", "false"):
            raise InvalidRequest(message, param=name)
    try:
        seconds = duration_seconds(audio)
    except UnreadableMedia as exc:
        raise InvalidRequest(
            f"'file' is not an audio file the gateway can read: {exc}.", param="file"
        ) from None
    known = {"model", "response_format", "language", "prompt", "temperature", GRANULARITIES_FIELD}
    return TranscriptionRequest(
        model=model,
        audio=audio,
        filename=filename,
        content_type=file_type,
        seconds=seconds,
        response_format=response_format,
        language=_text(fields, "language"),
        prompt=_text(fields, "prompt"),
        temperature=_temperature(_text(fields, "temperature")),
        timestamp_granularities=granularities,
        extra=tuple(
            (name, values[-1])
            for name, values in fields.items()
            if name not in known and name not in REFUSED
        ),
    )


def _read_form(
    boundary: bytes, body: bytes
) -> tuple[dict[str, list[str]], dict[str, tuple[str, str, bytes]]]:
    """The form's text fields (each name's values, in order) and its files (name:
    filename, type, bytes)."""
    if len(boundary) > MAX_BOUNDARY_LENGTH:  # python-multipart's parser refuses it
        raise InvalidRequest(
            f"The multipart boundary is over {MAX_BOUNDARY_LENGTH} bytes.", param="file"
        )
    parts = _plain_parts(boundary, body)
    if parts is None:
        parts = _parsed_parts(boundary, body)
    fields: dict[str, list[str]] = {}
    files: dict[str, tuple[str, str, bytes]] = {}
    for part in parts:
        _, disposition = _options(part.headers.get("content-disposition", b""))
        name = _decoded(disposition.get(b"name", b""), "a form field's name")
        if name == "file":
            if name in files:
                raise InvalidRequest("Send one 'file', not several.", param="file")
            # The name is only a label (the offline transcript's): never a reason to refuse.
            filename = disposition.get(b"filename", b"audio").decode(errors="replace")
            filename = _CONTROL.sub("", filename)[:MAX_FILENAME_CHARS]
            files[name] = (filename, _media_type(part.headers), b"".join(part.data))
            continue
        if part.size > MAX_FIELD_BYTES:
            raise InvalidRequest(
                f"'{name[:40]}' is over {MAX_FIELD_BYTES:,} bytes.", param=name[:100]
            )
        fields.setdefault(name, []).append(_decoded(b"".join(part.data), name))
    return fields, files


_HEADER_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _plain_parts(boundary: bytes, body: bytes) -> list[_Part] | None:
    """The parts of a form written plainly, as clients write one (no preamble or
    epilogue, each delimiter followed by a line break, a few short header lines a
    part), split at once; None for anything else, which python-multipart's parser then
    reads, or says what is wrong with (`_parsed_parts`). Property tests hold the two to
    the same parts. The parser is driven from Python a few bytes at a time; this
    finds the delimiters in C and reads an upload in a fraction of the time."""
    delimiter = b"\r\n--" + boundary
    if not body.startswith(delimiter[2:]):
        return None
    parts: list[_Part] = []
    at = len(delimiter) - 2  # where what follows a delimiter starts
    while not body.startswith(b"--", at):
        following = body.find(delimiter, at)
        blank = body.find(b"\r\n\r\n", at, following)
        if following < 0 or blank < 0 or len(parts) == MAX_PARTS:
            return None
        lines = body[at:blank].split(b"\r\n")
        if lines[0] or len(lines) - 1 > DEFAULT_MAX_HEADER_COUNT:
            return None
        headers = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if (
                not colon
                or len(line) > MAX_HEADER_LINE
                or not _HEADER_NAME.fullmatch(name)
                or b"\r" in value
                or b"\n" in value
            ):
                return None
            headers[name.decode("latin-1").lower()] = value.lstrip(b" ")
        data = body[blank + 4 : following]
        parts.append(_Part(headers, [data], len(data)))
        at = following + len(delimiter)
    return parts if body[at:] in (b"--", b"--\r\n") else None


def _parsed_parts(boundary: bytes, body: bytes) -> list[_Part]:
    """The parts as python-multipart's parser reads them; raises `InvalidRequest`
    saying what is wrong with a malformed body."""
    form = _Form()

    def adding(target: Callable[[], list[bytes]]) -> Callable[[bytes, int, int], None]:
        def add(data: bytes, start: int, end: int) -> None:
            target().append(data[start:end])

        return add

    def begin_part() -> None:
        if len(form.parts) >= MAX_PARTS:
            raise InvalidRequest(f"The form has more than {MAX_PARTS} parts.", param="file")
        form.parts.append(_Part())

    def add_data(data: bytes, start: int, end: int) -> None:
        part = form.parts[-1]
        part.data.append(data[start:end])
        part.size += end - start

    def end_header() -> None:
        name = b"".join(form.header_name).decode("latin-1").strip().lower()
        form.parts[-1].headers[name] = b"".join(form.header_value)
        form.header_name.clear()
        form.header_value.clear()

    def end() -> None:
        form.ended = True

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": begin_part,
            "on_part_data": add_data,
            "on_header_field": adding(lambda: form.header_name),
            "on_header_value": adding(lambda: form.header_value),
            "on_header_end": end_header,
            "on_end": end,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise InvalidRequest(f"The multipart body is malformed: {exc}.", param="file") from None
    if not form.ended:
        raise InvalidRequest("The multipart body ends before its closing boundary.", param="file")
    return form.parts


# A header value written plainly, as clients write one: a type, then `; name=value`
# parameters, each value a token or a quoted string with no backslash, quote or
# semicolon within.
_PLAIN_OPTIONS = re.compile(r'[\w.+/-]+(?:; [a-z]+=(?:"[^"\\;]*"|[\w.+-]+))*', re.ASCII)
_PARAMETER = re.compile(r'; ([a-z]+)=(?:"([^"\\;]*)"|([\w.+-]+))', re.ASCII)


def _options(value: str | bytes) -> tuple[bytes, dict[bytes, bytes]]:
    """A header's value and parameters, as python-multipart's `parse_options_header`
    reads them (a property test holds the two to the same answer): read with two
    regular expressions when written plainly, a third of the library's time."""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    plain = _plain_options(text)
    return plain if plain is not None else parse_options_header(text)


def _plain_options(text: str) -> tuple[bytes, dict[bytes, bytes]] | None:
    if not _PLAIN_OPTIONS.fullmatch(text):
        return None
    kind, _, _ = text.partition(";")
    return kind.lower().encode("latin-1"), {
        name.encode("latin-1"): (quoted or token).encode("latin-1")
        for name, quoted, token in _PARAMETER.findall(text)
    }


def _media_type(headers: dict[str, bytes]) -> str:
    """The file's media type as sent, when it is one (it is passed on as a header)."""
    kind, _ = _options(headers.get("content-type", b""))
    return kind.decode("latin-1") if _MEDIA_TYPE.fullmatch(kind) else ""


def _decoded(raw: bytes, param: str) -> str:
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise InvalidRequest(f"'{param[:40]}' is not UTF-8 text.", param=param[:100]) from None
    if "\x00" in text:
        raise InvalidRequest(f"'{param[:40]}' contains a NUL character.", param=param[:100])
    return text


def _text(fields: dict[str, list[str]], name: str) -> str:
    values = fields.get(name)
    return values[-1].strip() if values else ""


def _check_granularities(granularities: tuple[str, ...], response_format: str) -> None:
    for value in granularities:
        if value not in TIMESTAMP_GRANULARITIES:
            raise InvalidRequest(
                f"'{GRANULARITIES_FIELD}' takes {' and '.join(TIMESTAMP_GRANULARITIES)}, "
                f"not '{value[:40]}'.",
                param=GRANULARITIES_FIELD,
            )
    if granularities and response_format != "verbose_json":
        raise InvalidRequest(
            f"'{GRANULARITIES_FIELD}' needs response_format verbose_json.",
            param=GRANULARITIES_FIELD,
        )


def _temperature(text: str) -> str:
    if not text:
        return ""
    try:
        value = Decimal(text)
    except InvalidOperation:
        value = Decimal("NaN")
    if not (value.is_finite() and 0 <= value <= 1):
        raise InvalidRequest("'temperature' must be a number from 0 to 1.", param="temperature")
    return text
