"""A real HTTP server on 127.0.0.1 that answers as Deepgram's `POST /v1/listen` does,
scripted per request, for the Deepgram provider's tests.

    with DeepgramServer() as server:
        server.reply(Heard("Hello there.", duration="3.25"))     # the next request
        server.reply(Refused(429, "TOO_MANY_REQUESTS", "slow down", headers={"Retry-After": "4"}))
        provider = DeepgramProvider(server.url, "dg-key")
        server.requests[-1].query["model"]                       # what it received

Unscripted requests get `Heard("ok")`. A `Heard` answer carries the transcript's
words (timed half a second apart), its utterances (one per sentence, unless
`utterances=False`), paragraphs' sentences, the detected language and
`metadata.duration`, in Deepgram's shape.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from controlplane.money import dumps_exact
from tests.local_servers import ServedInThread

WORD_SECONDS = Decimal("0.5")


@dataclass(frozen=True)
class Heard:
    transcript: str = "ok"
    duration: Decimal | str | None = "1.5"
    language: str = "en"
    utterances: bool = True


@dataclass(frozen=True)
class Refused:
    """An HTTP error with Deepgram's error body."""

    status: int
    err_code: str = "Bad Request"
    err_msg: str = "failure"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Raw:
    """Exactly this body, as application/json, status 200."""

    body: bytes


Reply = Heard | Refused | Raw


@dataclass(frozen=True)
class ListenRequest:
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: bytes


class DeepgramServer(ServedInThread):
    def __init__(self) -> None:
        self.requests: list[ListenRequest] = []
        self._replies: deque[Reply] = deque()
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def reply(self, *replies: Reply) -> None:
        with self._lock:
            self._replies.extend(replies)

    def _take(self, request: ListenRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            return self._replies.popleft() if self._replies else Heard()


def listen_body(heard: Heard, model: str) -> dict[str, Any]:
    """Deepgram's answer for `heard`: words timed WORD_SECONDS apart, a sentence an
    utterance and a paragraph's sentence."""
    words = []
    for number, word in enumerate(heard.transcript.split()):
        start = number * WORD_SECONDS
        words.append(
            {
                "word": word.strip(".,!?").lower(),
                "start": start,
                "end": start + WORD_SECONDS,
                "confidence": Decimal("0.98"),
                "punctuated_word": word,
            }
        )
    sentences = []
    taken = 0
    for sentence in (s.strip() + "." for s in heard.transcript.split(".") if s.strip()):
        count = len(sentence.split())
        chunk = words[taken : taken + count]
        sentences.append({"text": sentence, "start": chunk[0]["start"], "end": chunk[-1]["end"]})
        taken += count
    results: dict[str, Any] = {
        "channels": [
            {
                "detected_language": heard.language,
                "alternatives": [
                    {
                        "transcript": heard.transcript,
                        "confidence": Decimal("0.97"),
                        "words": words,
                        "paragraphs": {
                            "transcript": heard.transcript,
                            "paragraphs": [{"sentences": sentences}] if sentences else [],
                        },
                    }
                ],
            }
        ]
    }
    if heard.utterances:
        results["utterances"] = [
            {"start": s["start"], "end": s["end"], "transcript": s["text"], "channel": 0}
            for s in sentences
        ]
    metadata: dict[str, Any] = {"request_id": "dg-test-1", "channels": 1, "models": [model]}
    if heard.duration is not None:
        metadata["duration"] = Decimal(heard.duration)
    return {"metadata": metadata, "results": results}


def _handler_for(server: DeepgramServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = self.rfile.read(length)
            url = urlsplit(self.path)
            query = {name: values[-1] for name, values in parse_qs(url.query).items()}
            request = ListenRequest(
                url.path,
                query,
                {name.lower(): value for name, value in self.headers.items()},
                body,
            )
            reply = server._take(request)
            if url.path != "/v1/listen":
                self._send(404, b'{"err_code": "Not Found", "err_msg": "no such path"}')
                return
            match reply:
                case Refused(status=status, err_code=code, err_msg=message, headers=headers):
                    error = {"err_code": code, "err_msg": message, "request_id": "dg-test-1"}
                    self._send(status, dumps_exact(error).encode(), headers)
                case Raw(body=raw):
                    self._send(200, raw)
                case Heard():
                    answer = listen_body(reply, query.get("model", ""))
                    self._send(200, dumps_exact(answer).encode())

        def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep the test output clean

    Handler.__name__ = "DeepgramServerHandler"
    return Handler
