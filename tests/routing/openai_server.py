"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests: scripted per request.

    with OpenAIServer() as server:
        server.reply(Answer("Hello", cost="0.000123456789012345"))   # the next request
        server.reply(Failure(429, "slow down", headers={"Retry-After": "7"}),
                     model="openai/gpt-4o")                            # the next one for a model
        provider = OpenAICompatibleProvider(server.url, "sk-test")    # server.url ends in /v1
        ...
        server.requests[-1].json["messages"]                          # what it received

It serves `POST <any prefix>/chat/completions`, `POST <any prefix>/responses` (the
Responses API: an `Answer` becomes a Response object, or its stream events),
`/embeddings`, `/audio/speech`, `POST <any prefix>/audio/transcriptions` (a multipart
upload: `requests[-1].form` holds its fields and `file`) and `GET <any prefix>/models`
(`server.models`). Each request takes the next scripted reply queued for its model,
else the next one queued for any model, else `Answer("ok")` (or its endpoint's
default answer); so unscripted traffic (a benchmark) always gets a valid answer.
HTTP/1.1 with keep-alive; streams are chunked.

Replies:
- `Answer(content, tool_calls=..., usage=..., cost=...)` answers the way the request
  asked: one JSON completion, or (`"stream": true`) OpenRouter-shaped server-sent
  events: a `: OPENROUTER PROCESSING` comment, content in word pieces, tool-call
  deltas with their arguments in pieces, a finish chunk, a usage chunk (`choices`
  empty) and `data: [DONE]`.
- `Stream(events)` sends exactly these events (dicts as `data:` lines, strings as
  raw lines, e.g. a comment), optionally without `[DONE]` or dropping the connection
  after some events; `chunk()` and `usage_chunk()` build events.
- `Failure(status, message, headers=...)` answers with an OpenAI-style error body.
- `Disconnect()` closes the connection without answering.
- `Transcribed(text, duration=...)` answers a transcription in the `response_format`
  it asked for, as OpenAI does (an `Answer` there is its content as the text).
- `Embeddings(dimensions, prompt_tokens, cost, encoding)` answers `/embeddings`: a
  vector per input, in the encoding the request asked (or `encoding`, to play a
  server that ignores it); unscripted, 4 dimensions and a token a word.
- `Audio(data, content_type, drop_after=...)` answers `/audio/speech` with `data` in
  chunks of `chunk_bytes` (chunked encoding), optionally dropping the connection
  after some chunks; unscripted, a few bytes labelled audio/mpeg.
Every reply takes `delay` (seconds before the response starts). Decimal numbers are
written with their exact digits, so `cost="0.000123456789012345"` arrives as is.
"""

from __future__ import annotations

import base64
import json
import math
import socket
import struct
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header

from controlplane.money import dumps_exact
from tests.local_servers import ServedInThread

# -- replies ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """A successful answer, streamed or not as the request asks.

    `tool_calls` are (name, arguments) pairs, arguments a dict or JSON text.
    `usage` is an OpenAI usage object; by default word counts. `cost` (OpenRouter's
    `usage.cost`) is added to it when given.
    """

    content: str = "ok"
    tool_calls: tuple[tuple[str, dict[str, Any] | str], ...] = ()
    usage: dict[str, Any] | None = None
    cost: Decimal | str | None = None
    model: str | None = None  # default: the requested model
    finish_reason: str | None = None  # default: "tool_calls" or "stop"
    delay: float = 0.0
    event_delay: float = 0.0  # between stream events


@dataclass(frozen=True)
class Stream:
    """Exactly these stream events (dicts become `data:` lines; strings are sent as raw
    lines, e.g. ": OPENROUTER PROCESSING"), then `data: [DONE]` unless `done` is False.
    `drop_after=n` closes the connection after n events, mid-body. `pause_after=n`
    waits `pause` seconds after n events (the server stopping ends the wait), for a
    stream whose end does not come while a test runs."""

    events: tuple[dict[str, Any] | str, ...]
    done: bool = True
    drop_after: int | None = None
    delay: float = 0.0
    event_delay: float = 0.0
    pause_after: int | None = None
    pause: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Failure:
    """An HTTP error with an OpenAI-style body `{"error": {"message", "code"}}`."""

    status: int
    message: str = "failure"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Disconnect:
    """Close the connection without sending a response."""

    delay: float = 0.0


@dataclass(frozen=True)
class Transcribed:
    """A transcription's answer; `duration` (seconds) is reported in verbose_json and,
    rounded up, as json's `usage`; None reports none."""

    text: str = "ok"
    duration: Decimal | str | None = None
    language: str = "english"
    delay: float = 0.0


@dataclass(frozen=True)
class Embeddings:
    """An `/embeddings` answer: vector `i` of input `j` is `j + i / 10`."""

    dimensions: int = 4
    prompt_tokens: int | None = None  # default: a token a word; None in usage: left out
    cost: Decimal | str | None = None
    encoding: str | None = None  # default: as the request asks
    report_usage: bool = True
    delay: float = 0.0
    # Every input's vector as written (Decimals with all their digits), instead.
    vector: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class Audio:
    """An `/audio/speech` answer: `data` in chunks, as the upstream streams it."""

    data: bytes = b"ID3" + bytes(range(256)) * 4
    content_type: str = "audio/mpeg"
    chunk_bytes: int = 256
    drop_after: int | None = None
    pause_after: int | None = None
    pause: float = 0.0
    # Set by the test: the chunks after `pause_after` wait for it (instead of `pause`).
    release: threading.Event | None = None
    delay: float = 0.0
    # Sent in one piece with its Content-Length, not chunked (`drop_after` still cuts
    # it short after that many `chunk_bytes`).
    whole: bool = False


Reply = Answer | Stream | Failure | Disconnect | Transcribed | Embeddings | Audio


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    json: Any
    client_port: int  # the same port again means the connection was kept alive
    # A multipart upload's text fields (each name's last value; repeated names as a
    # list under their name) and its `file` as (filename, content type, bytes).
    form: dict[str, Any] | None = None


def chunk(
    content: str | None = None,
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str | None = None,
    model: str = "test/model",
    role: str | None = None,
) -> dict[str, Any]:
    """One `chat.completion.chunk` event."""
    delta: dict[str, Any] = {}
    if role:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    return {
        "id": "gen-test-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def usage_chunk(
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
    *,
    cost: Decimal | str | None = None,
    cached_tokens: int = 0,
    reasoning_tokens: int = 0,
    model: str = "test/model",
) -> dict[str, Any]:
    """The final usage event, as OpenRouter sends it: `choices` empty."""
    return {
        "id": "gen-test-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "choices": [],
        "usage": _usage(prompt_tokens, completion_tokens, cost, cached_tokens, reasoning_tokens),
    }


def _usage(
    prompt_tokens: int,
    completion_tokens: int,
    cost: Decimal | str | None,
    cached_tokens: int = 0,
    reasoning_tokens: int = 0,
) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
    }
    if cost is not None:
        usage["cost"] = Decimal(cost)
    return usage


# -- the server -----------------------------------------------------------------------


class OpenAIServer(ServedInThread):
    """See the module docstring. Use as a context manager; `url` is the base URL
    (ending in /v1) a client puts before `/chat/completions`."""

    def __init__(self, models: list[dict[str, Any]] | None = None) -> None:
        self.models = list(models or [])
        self.requests: list[ReceivedRequest] = []
        self._queues: dict[str | None, deque[Reply]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.server = _Server(("127.0.0.1", 0), _handler_for(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def reply(self, *replies: Reply, model: str | None = None) -> None:
        """Queue replies for the next requests (for `model` only, if given)."""
        with self._lock:
            self._queues[model].extend(replies)

    @property
    def pending(self) -> int:
        """Replies queued and not yet sent."""
        with self._lock:
            return sum(len(queue) for queue in self._queues.values())

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()  # wakes handlers still sleeping on a delay
        super().__exit__(*exc)

    def _take(self, request: ReceivedRequest) -> Reply:
        sent = request.json if isinstance(request.json, dict) else request.form or {}
        model = sent.get("model")
        with self._lock:
            self.requests.append(request)
            for key in (model, None):
                if self._queues.get(key):
                    return self._queues[key].popleft()
        return Answer()

    def _wait_for(self, release: threading.Event | None) -> bool:
        """Wait until `release` is set; False when the server is stopping meanwhile."""
        while release is not None and not release.wait(0.05):
            if self._stopping.is_set():
                return False
        return True

    def _sleep(self, seconds: float) -> bool:
        """Wait; False when the server is stopping meanwhile."""
        return not (seconds and self._stopping.wait(seconds))


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (a timeout test) is not an error here


def _handler_for(server: OpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes: with Nagle's algorithm on, each
        # kept-alive answer would wait ~40 ms for a delayed ACK.
        disable_nagle_algorithm = True

        def do_GET(self) -> None:
            self._record(None)
            if self.path.rstrip("/").endswith("/models"):
                self._send_json(200, {"object": "list", "data": server.models})
            else:
                self._send_json(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw, parse_float=Decimal) if raw else None
            except ValueError:
                body = None
            if self.path.rstrip("/").endswith("/audio/transcriptions"):
                self._transcribe(raw)
                return
            request = self._record(body)
            endpoint = next((e for e in ENDPOINTS if self.path.rstrip("/").endswith(e)), None)
            responses_api = endpoint == "/responses"
            if endpoint is None:
                self._send_json(404, {"error": {"message": f"no route {self.path}"}})
                return
            reply = server._take(request)
            if not server._sleep(reply.delay):
                return
            if endpoint == "/embeddings" and isinstance(reply, Answer | Embeddings):
                made = reply if isinstance(reply, Embeddings) else Embeddings()
                self._send_json(200, _embeddings_body(made, body))
                return
            if endpoint == "/audio/speech" and isinstance(reply, Answer | Audio):
                self._send_audio(reply if isinstance(reply, Audio) else Audio())
                return
            wants_stream = isinstance(body, dict) and bool(body.get("stream"))
            model = (body or {}).get("model", "test/model") if isinstance(body, dict) else ""
            match reply:
                case Disconnect():
                    self._drop()
                case Failure(status=status, message=message, headers=headers):
                    error = {"error": {"message": message, "code": status}}
                    self._send_json(status, error, headers)
                case Stream():
                    self._send_stream(reply)
                case Answer() if responses_api and wants_stream:
                    self._send_stream(_response_stream(reply, model))
                case Answer() if responses_api:
                    self._send_json(200, _response_body(reply, model))
                case Answer() if wants_stream:
                    self._send_stream(_answer_stream(reply, model))
                case Answer():
                    self._send_json(200, _answer_body(reply, model))

        def _record(self, body: Any, form: dict[str, Any] | None = None) -> ReceivedRequest:
            return ReceivedRequest(
                method=self.command,
                path=self.path,
                headers={name.lower(): value for name, value in self.headers.items()},
                json=body,
                client_port=self.client_address[1],
                form=form,
            )

        def _transcribe(self, raw: bytes) -> None:
            form = _form_of(self.headers.get("Content-Type", ""), raw)
            reply = server._take(self._record(None, form))
            if not server._sleep(reply.delay):
                return
            match reply:
                case Disconnect():
                    self._drop()
                case Failure(status=status, message=message, headers=headers):
                    self._send_json(
                        status, {"error": {"message": message, "code": status}}, headers
                    )
                case Answer(content=text):
                    self._send_transcription(Transcribed(text), form)
                case Transcribed():
                    self._send_transcription(reply, form)
                case _:
                    self._send_json(500, {"error": {"message": "a stream for a transcription"}})

        def _send_transcription(self, reply: Transcribed, form: dict[str, Any]) -> None:
            response_format = form.get("response_format") or "json"
            if response_format in ("text", "srt", "vtt"):
                text = {
                    "text": f"{reply.text}\n",
                    "srt": f"1\n00:00:00,000 --> 00:00:01,000\n{reply.text}\n\n",
                    "vtt": f"WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n{reply.text}\n\n",
                }[response_format]
                payload = text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            body: dict[str, Any] = {"text": reply.text}
            duration = None if reply.duration is None else Decimal(reply.duration)
            if response_format == "verbose_json":
                body = {"task": "transcribe", "language": reply.language, **body}
                if duration is not None:
                    body["duration"] = duration
                body["segments"] = [
                    {
                        "id": 0,
                        "start": Decimal(0),
                        "end": duration or Decimal(1),
                        "text": reply.text,
                    }
                ]
            elif duration is not None:
                body["usage"] = {"type": "duration", "seconds": math.ceil(duration)}
            self._send_json(200, body)

        def _send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            payload = dumps_exact(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def _send_stream(self, stream: Stream) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            for name, value in stream.headers.items():
                self.send_header(name, value)
            self.end_headers()
            for number, event in enumerate(stream.events):
                if stream.drop_after is not None and number >= stream.drop_after:
                    self._drop()
                    return
                if number and not server._sleep(stream.event_delay):
                    return
                if number == stream.pause_after and not server._sleep(stream.pause):
                    return
                line = event if isinstance(event, str) else f"data: {dumps_exact(event)}"
                self._write_chunk(f"{line}\n\n")
            if stream.drop_after is not None and stream.drop_after >= len(stream.events):
                self._drop()
                return
            if stream.done:
                self._write_chunk("data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        def _send_audio(self, audio: Audio) -> None:
            self.send_response(200)
            self.send_header("Content-Type", audio.content_type)
            if audio.whole:
                self.send_header("Content-Length", str(len(audio.data)))
                self.end_headers()
                cut = None if audio.drop_after is None else audio.drop_after * audio.chunk_bytes
                self.wfile.write(audio.data[:cut])
                if cut is not None:
                    self._drop()
                return
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            size = audio.chunk_bytes
            for number, start in enumerate(range(0, len(audio.data), size)):
                if audio.drop_after is not None and number >= audio.drop_after:
                    self._drop()
                    return
                if number == audio.pause_after and not server._sleep(audio.pause):
                    return
                if number == audio.pause_after and not server._wait_for(audio.release):
                    return
                self._write_chunk(audio.data[start : start + size])
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        def _write_chunk(self, text: str | bytes) -> None:
            data = text.encode() if isinstance(text, str) else text
            self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _drop(self) -> None:
            self.close_connection = True
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep the test output clean

    Handler.__name__ = "OpenAIServerHandler"
    return Handler


def _form_of(content_type: str, raw: bytes) -> dict[str, Any]:
    """A multipart upload's fields, parsed by python-multipart."""
    _, options = parse_options_header(content_type)
    parts: list[dict[str, Any]] = []

    def on_header_value(data: bytes, start: int, end: int) -> None:
        parts[-1]["headers"].append(data[start:end])

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1]["data"] += data[start:end]

    parser = MultipartParser(
        options.get(b"boundary", b"-"),
        {
            "on_part_begin": lambda: parts.append({"headers": [], "data": b""}),
            "on_header_value": on_header_value,
            "on_part_data": on_part_data,
        },
    )
    parser.write(raw)
    parser.finalize()
    form: dict[str, Any] = {}
    for part in parts:
        disposition = next(h for h in part["headers"] if b"form-data" in h)
        _, params = parse_options_header(disposition)
        name = params[b"name"].decode()
        if b"filename" in params:
            content_type = next((h for h in part["headers"] if b"form-data" not in h), b"")
            form[name] = (params[b"filename"].decode(), content_type.decode(), part["data"])
        elif name.endswith("[]"):
            form.setdefault(name, []).append(part["data"].decode())
        else:
            form[name] = part["data"].decode()
    return form


def _answer_body(answer: Answer, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.content or None}
    calls = _tool_calls(answer)
    if calls:
        message["tool_calls"] = calls
    return {
        "id": "gen-test-1",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": answer.model or model,
        "choices": [{"index": 0, "message": message, "finish_reason": _finish(answer)}],
        "usage": _answer_usage(answer),
    }


def _answer_stream(answer: Answer, model: str) -> Stream:
    model = answer.model or model
    events: list[dict[str, Any] | str] = [
        ": OPENROUTER PROCESSING",
        chunk("", role="assistant", model=model),
    ]
    events += [chunk(piece, model=model) for piece in _pieces(answer.content)]
    for index, call in enumerate(_tool_calls(answer)):
        arguments = call["function"]["arguments"]
        head = {**call, "index": index, "function": {"name": call["function"]["name"]}}
        head["function"]["arguments"] = ""
        events.append(chunk(tool_calls=[head], model=model))
        events += [
            chunk(tool_calls=[{"index": index, "function": {"arguments": arguments[i : i + 7]}}])
            for i in range(0, len(arguments), 7)
        ]
    events.append(chunk(finish_reason=_finish(answer), model=model))
    events.append({**usage_chunk(model=model), "usage": _answer_usage(answer)})
    return Stream(tuple(events), event_delay=answer.event_delay)


ENDPOINTS = ("/chat/completions", "/responses", "/embeddings", "/audio/speech")


def _embeddings_body(answer: Embeddings, request: Any) -> dict[str, Any]:
    asked = request if isinstance(request, dict) else {}
    given = asked.get("input", "")
    inputs = [given] if isinstance(given, str) or not given or isinstance(given[0], int) else given
    encoding = answer.encoding or asked.get("encoding_format") or "float"
    data = []
    for index in range(len(inputs)):
        vector = [index + i / 10 for i in range(answer.dimensions)]
        embedding: Any = list(answer.vector) if answer.vector is not None else vector
        if encoding == "base64":
            embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    body: dict[str, Any] = {"object": "list", "data": data, "model": asked.get("model", "")}
    if answer.report_usage:
        words = sum(len(str(item).split()) for item in inputs)
        tokens = words if answer.prompt_tokens is None else answer.prompt_tokens
        body["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        if answer.cost is not None:
            body["usage"]["cost"] = Decimal(answer.cost)
    return body


def _tool_calls(answer: Answer) -> list[dict[str, Any]]:
    return [
        {
            "id": f"call_test_{index}",
            "type": "function",
            "function": {
                "name": name,
                "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
            },
        }
        for index, (name, arguments) in enumerate(answer.tool_calls)
    ]


def _finish(answer: Answer) -> str:
    return answer.finish_reason or ("tool_calls" if answer.tool_calls else "stop")


def _answer_usage(answer: Answer) -> dict[str, Any]:
    usage = dict(answer.usage or _usage(12, len(answer.content.split()), None))
    if answer.cost is not None:
        usage["cost"] = Decimal(answer.cost)
    return usage


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [word + (" " if i < len(words) - 1 else "") for i, word in enumerate(words) if word]


# -- the Responses API ------------------------------------------------------------------


def _response_body(answer: Answer, model: str, status: str = "completed") -> dict[str, Any]:
    """An `Answer` as a Responses API `Response` object."""
    output: list[dict[str, Any]] = []
    if answer.content:
        text = {"type": "output_text", "text": answer.content, "annotations": []}
        output.append(
            {
                "id": "msg_test_1",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [text],
            }
        )
    output += [
        {
            "id": f"fc_test_{index}",
            "type": "function_call",
            "call_id": call["id"],
            "name": call["function"]["name"],
            "arguments": call["function"]["arguments"],
            "status": "completed",
        }
        for index, call in enumerate(_tool_calls(answer))
    ]
    chat_usage = _answer_usage(answer)
    usage: dict[str, Any] = {
        "input_tokens": chat_usage["prompt_tokens"],
        "input_tokens_details": chat_usage.get("prompt_tokens_details") or {"cached_tokens": 0},
        "output_tokens": chat_usage["completion_tokens"],
        "output_tokens_details": chat_usage.get("completion_tokens_details")
        or {"reasoning_tokens": 0},
        "total_tokens": chat_usage["prompt_tokens"] + chat_usage["completion_tokens"],
    }
    if "cost" in chat_usage:
        usage["cost"] = chat_usage["cost"]
    cut_short = answer.finish_reason == "length"
    return {
        "id": "resp_test_1",
        "object": "response",
        "created_at": 1700000000,
        "status": "incomplete" if cut_short else status,
        "incomplete_details": {"reason": "max_output_tokens"} if cut_short else None,
        "model": answer.model or model,
        "output": output,
        "usage": usage,
    }


def _response_stream(answer: Answer, model: str) -> Stream:
    """An `Answer` as the Responses API streams it (the events a client reads)."""
    final = _response_body(answer, model)
    opened = {**final, "status": "in_progress", "output": [], "usage": None}
    events: list[dict[str, Any] | str] = [
        {"type": "response.created", "response": opened},
        {"type": "response.in_progress", "response": opened},
    ]
    for index, item in enumerate(final["output"]):
        where = {"item_id": item["id"], "output_index": index}
        if item["type"] == "message":
            events.append(
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": {**item, "content": [], "status": "in_progress"},
                }
            )
            events += [
                {"type": "response.output_text.delta", **where, "content_index": 0, "delta": piece}
                for piece in _pieces(answer.content)
            ]
            events.append(
                {
                    "type": "response.output_text.done",
                    **where,
                    "content_index": 0,
                    "text": answer.content,
                }
            )
        else:
            events.append(
                {
                    "type": "response.output_item.added",
                    "output_index": index,
                    "item": {**item, "arguments": "", "status": "in_progress"},
                }
            )
            arguments = item["arguments"]
            events += [
                {
                    "type": "response.function_call_arguments.delta",
                    **where,
                    "delta": arguments[i : i + 7],
                }
                for i in range(0, len(arguments), 7)
            ]
            events.append(
                {"type": "response.function_call_arguments.done", **where, "arguments": arguments}
            )
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    ending = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
    events.append({"type": ending, "response": final})
    numbered = tuple(
        {**event, "sequence_number": number} if isinstance(event, dict) else event
        for number, event in enumerate(events)
    )
    return Stream(numbered, done=False, event_delay=answer.event_delay)
