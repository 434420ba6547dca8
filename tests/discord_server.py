"""A fake of Discord's HTTP API on 127.0.0.1, for tests: a real HTTP server in a
thread that checks the bot token (`Authorization: Bot ...`) as Discord does and keeps
what the bot did.

    with DiscordServer() as discord:
        discord.add_bot(TOKEN, application_id="1100", username="ops-bot")
        discord.fail(discord.rate_limited(retry_after=0.5))   # the next request
        integration.settings = {"api_url": discord.url, ...}
        ... discord.messages, discord.edits, discord.commands, discord.requests
        ... discord.direct_channels (user id -> DM channel id), discord.original_responses

Messages are refused, as Discord does, when their content is empty (and no
components) or over 2000 characters, and edits of a message it never posted get 404.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from typing import Any

from tests.local_servers import ServedInThread

MESSAGE_LIMIT = 2000


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: Any = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class Bot:
    token: str
    application_id: str
    user_id: str
    username: str
    application_name: str
    verify_key: str


@dataclass
class Request:
    """One request the fake received (the token is checked, not kept)."""

    method: str
    path: str
    body: Any = None


class DiscordServer(ServedInThread):
    def __init__(self) -> None:
        self.bots: dict[str, Bot] = {}
        self.requests: list[Request] = []
        self.messages: dict[str, dict[str, Any]] = {}  # by message id
        self.edits: list[dict[str, Any]] = []
        self.commands: dict[str, list[dict[str, Any]]] = {}  # by application id
        self.direct_channels: dict[str, str] = {}  # by recipient's user id
        # An interaction's answer written later (deferred), by interaction token;
        # None once deleted.
        self.original_responses: dict[str, dict[str, Any] | None] = {}
        self._failures: deque[Answer] = deque()
        self._ids = count(900_000_000_000_000_001)
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v10"

    # Setting up

    def add_bot(
        self,
        token: str,
        *,
        application_id: str = "1100110011001100",
        username: str = "ops-bot",
        application_name: str = "Ops Control",
        verify_key: str = "",
    ) -> Bot:
        bot = Bot(token, application_id, "2200220022002200", username, application_name, verify_key)
        self.bots[token] = bot
        return bot

    def fail(self, *answers: Answer) -> None:
        """The next requests get these answers instead (a rate limit, an outage)."""
        with self._lock:
            self._failures.extend(answers)

    @staticmethod
    def rate_limited(retry_after: float) -> Answer:
        return Answer(
            429,
            {"message": "You are being rate limited.", "retry_after": retry_after, "global": False},
            (("Retry-After", str(int(retry_after) + 1)),),
        )

    @staticmethod
    def outage() -> Answer:
        return Answer(502, "<html>Bad Gateway</html>")

    def posted(self, method: str) -> list[Request]:
        return [r for r in self.requests if r.method == method]

    # Answering

    def answer(self, token: str, method: str, path: str, body: Any) -> Answer:
        with self._lock:
            self.requests.append(Request(method, path, body))
            if self._failures:
                return self._failures.popleft()
            bot = self.bots.get(token)
            if bot is None:
                return _error(401, 0, "401: Unauthorized")
            parts = path.strip("/").split("/")
            if method == "GET" and parts == ["users", "@me"]:
                return Answer(200, {"id": bot.user_id, "username": bot.username, "bot": True})
            if method == "GET" and parts == ["applications", "@me"]:
                return Answer(
                    200,
                    {
                        "id": bot.application_id,
                        "name": bot.application_name,
                        "verify_key": bot.verify_key,
                    },
                )
            if method == "PUT" and len(parts) == 3 and parts[0] == "applications":
                return self._set_commands(bot, parts[1], body)
            if method == "POST" and parts == ["users", "@me", "channels"]:
                return self._direct_channel(body)
            if parts[:1] == ["webhooks"] and parts[3:] == ["messages", "@original"]:
                return self._original_response(bot, method, parts[1], parts[2], body)
            if parts[:1] == ["channels"] and len(parts) in (3, 4) and parts[2] == "messages":
                return self._message(method, parts, body)
            return _error(404, 0, "404: Not Found")

    def _set_commands(self, bot: Bot, application_id: str, body: Any) -> Answer:
        if application_id != bot.application_id:
            return _error(403, 50001, "Missing Access")
        if not isinstance(body, list) or not all(
            isinstance(c, dict) and c.get("name") and c.get("description") for c in body
        ):
            return _error(400, 50035, "Invalid Form Body")
        self.commands[application_id] = body
        return Answer(200, [{**c, "id": str(next(self._ids))} for c in body])

    def _direct_channel(self, body: Any) -> Answer:
        recipient = body.get("recipient_id") if isinstance(body, dict) else None
        if not isinstance(recipient, str) or not recipient.isdigit():
            return _error(400, 50035, "Invalid Form Body")
        channel_id = self.direct_channels.setdefault(recipient, str(next(self._ids)))
        return Answer(200, {"id": channel_id, "type": 1, "recipients": [{"id": recipient}]})

    def _original_response(
        self, bot: Bot, method: str, application_id: str, token: str, body: Any
    ) -> Answer:
        if application_id != bot.application_id:
            return _error(404, 10015, "Unknown Webhook")
        if method == "DELETE":
            self.original_responses[token] = None
            return Answer(204, None)
        if method != "PATCH" or not isinstance(body, dict):
            return _error(405, 0, "405: Method Not Allowed")
        content = body.get("content")
        if not isinstance(content, str) or len(content) > MESSAGE_LIMIT:
            return _error(400, 50035, "Invalid Form Body: content must be 2000 or fewer")
        self.original_responses[token] = body
        return Answer(200, {**body, "id": str(next(self._ids))})

    def _message(self, method: str, parts: list[str], body: Any) -> Answer:
        channel_id = parts[1]
        if not isinstance(body, dict):
            return _error(400, 50035, "Invalid Form Body")
        content = body.get("content")
        if not isinstance(content, str) or len(content) > MESSAGE_LIMIT:
            return _error(400, 50035, "Invalid Form Body: content must be 2000 or fewer")
        if not content and not body.get("components"):
            return _error(400, 50006, "Cannot send an empty message")
        if method == "POST" and len(parts) == 3:
            message = {**body, "id": str(next(self._ids)), "channel_id": channel_id}
            self.messages[message["id"]] = message
            return Answer(200, message)
        if method == "PATCH" and len(parts) == 4:
            message = self.messages.get(parts[3])
            if message is None or message["channel_id"] != channel_id:
                return _error(404, 10008, "Unknown Message")
            message.update(body)
            self.edits.append({**body, "id": parts[3], "channel_id": channel_id})
            return Answer(200, message)
        return _error(405, 0, "405: Method Not Allowed")


def _error(status: int, code: int, message: str) -> Answer:
    return Answer(status, {"message": message, "code": code})


def _handler_for(discord: DiscordServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = ValueError
            authorization = self.headers.get("Authorization") or ""
            path = self.path.split("?", 1)[0]
            if not path.startswith("/api/v10/"):
                answer = _error(404, 0, "404: Not Found")
            elif body is ValueError:
                answer = _error(400, 50109, "The request body contains invalid JSON.")
            elif not authorization.startswith("Bot "):
                answer = _error(401, 0, "401: Unauthorized")
            else:
                answer = discord.answer(
                    authorization.removeprefix("Bot "),
                    self.command,
                    path.removeprefix("/api/v10"),
                    body,
                )
            if answer.status == 204:
                self.send_response(204)
                self.end_headers()
                return
            encoded = (
                answer.body if isinstance(answer.body, str) else json.dumps(answer.body)
            ).encode()
            self.send_response(answer.status)
            content_type = "text/html" if isinstance(answer.body, str) else "application/json"
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(encoded)))
            for name, value in answer.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(encoded)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep the test output clean

    return Handler
