"""A real HTTP server on 127.0.0.1 speaking Anthropic's Messages API, for tests.

    with AnthropicServer() as server:
        server.reply(Message("Hello", usage=usage(10, 3, cache_read=100)))  # the next request
        server.reply(Failure(529, "overloaded_error", "Overloaded"))
        provider = AnthropicProvider(server.url, "sk-ant-test")  # POSTs {url}/v1/messages
        server.requests[-1].json["system"]                         # what it received

Each `POST .../v1/messages` takes the next scripted reply, else `Message("ok")`.
A `Message` answers the way the request asked: one JSON message, or (`"stream":
true`) Anthropic's events in Anthropic's order (message_start, ping, a text block in
word pieces, a tool_use block per tool with its input JSON in pieces, message_delta
with the stop reason and output tokens, message_stop). `error_after=n` sends an
`error` event (overloaded) after n events instead of the rest; `drop_after=n` drops
the connection there. `Failure` answers with Anthropic's error body.
"""

from __future__ import annotations

import json
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.local_servers import ServedInThread
from tests.routing.openai_server import ReceivedRequest


def usage(
    input_tokens: int = 12, output_tokens: int = 4, *, cache_read: int = 0, cache_write: int = 0
) -> dict[str, int]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_input_tokens": cache_read,
        "cache_creation_input_tokens": cache_write,
    }


@dataclass(frozen=True)
class Message:
    text: str = "ok"
    tool_uses: tuple[tuple[str, dict[str, Any]], ...] = ()
    usage: dict[str, int] = field(default_factory=usage)
    stop_reason: str | None = None  # default: "tool_use" with tools, else "end_turn"
    stop_sequence: str | None = None
    error_after: int | None = None
    drop_after: int | None = None


@dataclass(frozen=True)
class Failure:
    status: int
    type: str = "api_error"
    message: str = "failure"
    headers: dict[str, str] = field(default_factory=dict)


Reply = Message | Failure


class AnthropicServer(ServedInThread):
    def __init__(self) -> None:
        self.requests: list[ReceivedRequest] = []
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self.server = _Server(("127.0.0.1", 0), _handler_for(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def reply(self, *replies: Reply) -> None:
        with self._lock:
            self._queue.extend(replies)

    def _take(self, request: ReceivedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            return self._queue.popleft() if self._queue else Message()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


def message_body(reply: Message, model: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if reply.text:
        content.append({"type": "text", "text": reply.text})
    content += [
        {"type": "tool_use", "id": f"toolu_test_{i}", "name": name, "input": arguments}
        for i, (name, arguments) in enumerate(reply.tool_uses)
    ]
    return {
        "id": "msg_test_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _stop_reason(reply),
        "stop_sequence": reply.stop_sequence,
        "usage": reply.usage,
    }


def _stop_reason(reply: Message) -> str:
    return reply.stop_reason or ("tool_use" if reply.tool_uses else "end_turn")


def message_events(reply: Message, model: str) -> list[dict[str, Any]]:
    start = message_body(reply, model)
    start.update(content=[], stop_reason=None, stop_sequence=None)
    start["usage"] = {**reply.usage, "output_tokens": 1}
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": start},
        {"type": "ping"},
    ]
    index = 0
    if reply.text:
        events.append(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            }
        )
        words = reply.text.split(" ")
        for i, word in enumerate(words):
            piece = word + (" " if i < len(words) - 1 else "")
            delta = {"type": "text_delta", "text": piece}
            events.append({"type": "content_block_delta", "index": 0, "delta": delta})
        events.append({"type": "content_block_stop", "index": 0})
        index = 1
    for offset, (name, arguments) in enumerate(reply.tool_uses):
        block = {"type": "tool_use", "id": f"toolu_test_{offset}", "name": name, "input": {}}
        events.append({"type": "content_block_start", "index": index, "content_block": block})
        text = json.dumps(arguments)
        for i in range(0, len(text), 7):
            delta = {"type": "input_json_delta", "partial_json": text[i : i + 7]}
            events.append({"type": "content_block_delta", "index": index, "delta": delta})
        events.append({"type": "content_block_stop", "index": index})
        index += 1
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": _stop_reason(reply), "stop_sequence": reply.stop_sequence},
            "usage": {"output_tokens": reply.usage["output_tokens"]},
        }
    )
    events.append({"type": "message_stop"})
    return events


def _handler_for(server: AnthropicServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            request = ReceivedRequest(
                method=self.command,
                path=self.path,
                headers={name.lower(): value for name, value in self.headers.items()},
                json=body,
                client_port=self.client_address[1],
            )
            if self.path != "/v1/messages":
                self._send_json(404, _error("not_found_error", f"no route {self.path}"))
                return
            reply = server._take(request)
            model = body.get("model", "") if isinstance(body, dict) else ""
            match reply:
                case Failure(status=status, type=kind, message=message, headers=headers):
                    self._send_json(status, _error(kind, message), headers)
                case Message() if isinstance(body, dict) and body.get("stream"):
                    self._send_stream(reply, model)
                case Message():
                    self._send_json(200, message_body(reply, model))

        def _send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def _send_stream(self, reply: Message, model: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for number, event in enumerate(message_events(reply, model)):
                if number == reply.drop_after:
                    self.close_connection = True
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if number == reply.error_after:
                    event = _error("overloaded_error", "Overloaded")
                self._write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n")
                if number == reply.error_after:
                    break
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        def _write(self, text: str) -> None:
            data = text.encode()
            self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}
