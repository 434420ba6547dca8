"""A minimal, fast OpenAI-compatible upstream for `bin/manage bench_gateway` to send
calls to.

The upstream answers every `POST .../chat/completions` with the same small JSON
completion (usage and an OpenRouter-style `usage.cost`), `GET .../models` with a
one-model list, and each other endpoint the gateway serves with a small answer of
its shape: `/embeddings`, `/audio/speech` (a few bytes of "audio"),
`/audio/transcriptions`, `/responses` and `/messages` (what `bench_gateway
--endpoint` compares the gateway's endpoints with). It is a bare asyncio protocol
with Nagle disabled, so that what the gateway benchmark measures is the gateway, not
the upstream. The gateway benchmark runs it in a process of its own:

    python -m benchmarks.upstream [--port 0]     # prints "listening on <port>"

This module imports nothing from Django, so that process starts in a few
milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
import threading
from collections.abc import Sequence

UPSTREAM_MODEL = "bench-model"
EMBEDDING_MODEL = "bench-embedding"
SPEECH_MODEL = "bench-speech"
TRANSCRIPTION_MODEL = "bench-transcription"
UPSTREAM_COST = "0.0000021"  # USD per call, as the upstream reports it (usage.cost)
UPSTREAM_PROMPT_TOKENS = 12
UPSTREAM_COMPLETION_TOKENS = 2


# -- the upstream -----------------------------------------------------------------------


def _response(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


def completion_body() -> bytes:
    """The one answer: JSON text, the cost written as an exact decimal number."""
    usage = (
        f'{{"prompt_tokens":{UPSTREAM_PROMPT_TOKENS},'
        f'"completion_tokens":{UPSTREAM_COMPLETION_TOKENS},'
        f'"total_tokens":{UPSTREAM_PROMPT_TOKENS + UPSTREAM_COMPLETION_TOKENS},'
        f'"cost":{UPSTREAM_COST}}}'
    )
    return (
        '{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,'
        f'"model":"{UPSTREAM_MODEL}","choices":[{{"index":0,'
        '"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],'
        f'"usage":{usage}}}'
    ).encode()


COMPLETION = _response("200 OK", completion_body())
MODELS = _response(
    "200 OK",
    json.dumps(
        {"object": "list", "data": [{"id": UPSTREAM_MODEL, "object": "model", "created": 0}]}
    ).encode(),
)
EMBEDDING = _response(
    "200 OK",
    json.dumps(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.125] * 256}],
            "model": EMBEDDING_MODEL,
            "usage": {"prompt_tokens": 3, "total_tokens": 3},
        }
    ).encode(),
)
SPEECH = _response("200 OK", b"ID3" + bytes(1021), "audio/mpeg")
TRANSCRIPTION = _response("200 OK", b'{"text":"ok"}')
RESPONSE = _response(
    "200 OK",
    json.dumps(
        {
            "id": "resp_bench",
            "object": "response",
            "created_at": 1700000000,
            "status": "completed",
            "model": UPSTREAM_MODEL,
            "output": [
                {
                    "type": "message",
                    "id": "msg_bench",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "ok", "annotations": []}],
                }
            ],
            "usage": {
                "input_tokens": UPSTREAM_PROMPT_TOKENS,
                "output_tokens": UPSTREAM_COMPLETION_TOKENS,
                "total_tokens": UPSTREAM_PROMPT_TOKENS + UPSTREAM_COMPLETION_TOKENS,
            },
        }
    ).encode(),
)
MESSAGE = _response(
    "200 OK",
    json.dumps(
        {
            "id": "msg_bench",
            "type": "message",
            "role": "assistant",
            "model": UPSTREAM_MODEL,
            "content": [{"type": "text", "text": "ok"}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": UPSTREAM_PROMPT_TOKENS,
                "output_tokens": UPSTREAM_COMPLETION_TOKENS,
            },
        }
    ).encode(),
)
# What each POST path (by its end) is answered with.
ANSWERS = {
    "/chat/completions": COMPLETION,
    "/embeddings": EMBEDDING,
    "/audio/speech": SPEECH,
    "/audio/transcriptions": TRANSCRIPTION,
    "/responses": RESPONSE,
    "/messages": MESSAGE,
}
NOT_FOUND = _response("404 Not Found", b'{"error":{"message":"not found","code":404}}')


class _Connection(asyncio.Protocol):
    """HTTP/1.1 with keep-alive, just enough of it: a request line, headers, and a
    body of `Content-Length` bytes (clients send no chunked requests here)."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1").lower()
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip() == "content-length":
                    length = int(value.strip() or 0)
            if len(self.buffer) < end + 4 + length:
                return
            del self.buffer[: end + 4 + length]
            method, _, rest = head.partition(" ")
            path = rest.partition(" ")[0].partition("?")[0]
            answer = next((a for end, a in ANSWERS.items() if path.endswith(end)), None)
            if method == "post" and answer is not None:
                self.transport.write(answer)
            elif method == "get" and path.endswith("/models"):
                self.transport.write(MODELS)
            else:
                self.transport.write(NOT_FOUND)
            if "\r\nconnection: close" in head:
                self.transport.close()
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


class Upstream:
    """The upstream on 127.0.0.1, served from a thread of its own (`with Upstream()`),
    or from the current thread with `serve_forever()`."""

    def __init__(self, port: int = 0) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = self.loop.run_until_complete(
            self.loop.create_server(_Connection, "127.0.0.1", port, backlog=1024)
        )
        self.port: int = self.server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread: threading.Thread | None = None

    def serve_forever(self) -> None:
        try:
            self.loop.run_forever()
        finally:
            self.server.close()
            self.loop.run_until_complete(self.server.wait_closed())
            self.loop.close()

    def __enter__(self) -> Upstream:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fast local OpenAI-compatible upstream.")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    upstream = Upstream(parser.parse_args(argv).port)
    # The parent reads this line to learn the port.
    sys.stdout.write(f"listening on {upstream.port}\n")
    sys.stdout.flush()
    # Ctrl-C in the terminal reaches this process too: stop quietly.
    with contextlib.suppress(KeyboardInterrupt):
        upstream.serve_forever()


if __name__ == "__main__":
    main()
