"""A fake of Telegram's Bot API on 127.0.0.1, for tests: a real HTTP server in a
thread that checks the bot token in the path as Telegram does and keeps what the bot
did.

    with TelegramServer() as telegram:
        telegram.add_bot(TOKEN, username="ops_bot")
        telegram.queue(telegram.message(user_id=7, text="/help"))   # for getUpdates
        telegram.fail(telegram.rate_limited(retry_after=3))          # the next request
        integration.settings = {"api_url": telegram.url, ...}
        ... telegram.sent, telegram.edited, telegram.answered, telegram.webhook

`getUpdates` serves the queue from the request's `offset` and forgets the updates
before it (Telegram's confirmation); with a `timeout` it waits (up to `MAX_HOLD`)
for an update to be queued; while a webhook is set it answers 409, as Telegram does.
`sendMessage` and `editMessageText` refuse text over 4096 characters and HTML that
Telegram could not parse (a tag it does not know, or one left open).
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from typing import Any

from tests.local_servers import ServedInThread

MESSAGE_LIMIT = 4096
# A long poll is held at most this long, so a test's poller never hangs on the fake.
MAX_HOLD = 5.0
TELEGRAM_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre"}


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: Any = None


@dataclass
class Bot:
    token: str
    id: int
    username: str
    first_name: str


@dataclass
class Call:
    """One request the fake received: its method and JSON parameters (the token is
    checked, not kept)."""

    method: str
    parameters: dict[str, Any] = field(default_factory=dict)


class TelegramServer(ServedInThread):
    def __init__(self) -> None:
        self.bots: dict[str, Bot] = {}
        self.calls: list[Call] = []
        self.sent: list[dict[str, Any]] = []
        self.edited: list[dict[str, Any]] = []
        self.answered: list[dict[str, Any]] = []
        self.webhook: dict[str, Any] | None = None
        self._updates: deque[dict[str, Any]] = deque()
        self._failures: deque[Answer] = deque()
        self._update_ids = count(100_001)
        self._message_ids = count(1)
        self._changed = threading.Condition()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    # Setting up

    def add_bot(self, token: str, username: str = "ops_bot", first_name: str = "Ops") -> Bot:
        bot = Bot(token, int(token.split(":")[0]), username, first_name)
        self.bots[token] = bot
        return bot

    def fail(self, *answers: Answer) -> None:
        """The next requests get these answers instead (a rate limit, an outage)."""
        with self._changed:
            self._failures.extend(answers)

    @staticmethod
    def rate_limited(retry_after: int) -> Answer:
        return Answer(
            429,
            {
                "ok": False,
                "error_code": 429,
                "description": f"Too Many Requests: retry after {retry_after}",
                "parameters": {"retry_after": retry_after},
            },
        )

    @staticmethod
    def outage() -> Answer:
        return Answer(502, "<html>Bad Gateway</html>")

    def queue(self, body: dict[str, Any]) -> int:
        """Queue an update for getUpdates (`body` without its update_id); its id."""
        with self._changed:
            update_id = next(self._update_ids)
            self._updates.append({"update_id": update_id, **body})
            self._changed.notify_all()
        return update_id

    def update(self, body: dict[str, Any]) -> dict[str, Any]:
        """An update with the next id, not queued: for a webhook's request."""
        return {"update_id": next(self._update_ids), **body}

    @staticmethod
    def message(
        user_id: int,
        text: str,
        *,
        chat_id: int | None = None,
        chat_type: str = "private",
        username: str = "alice",
        edited: bool = False,
        message_id: int = 1,
    ) -> dict[str, Any]:
        message = {
            "message_id": message_id,
            "date": 1_800_000_000,
            "chat": {"id": chat_id if chat_id is not None else user_id, "type": chat_type},
            "from": {"id": user_id, "is_bot": False, "first_name": "Alice", "username": username},
            "text": text,
        }
        return {"edited_message" if edited else "message": message}

    def pending_updates(self) -> list[int]:
        with self._changed:
            return [u["update_id"] for u in self._updates]

    def texts_to(self, chat_id: int) -> list[str]:
        return [m["text"] for m in self.sent if str(m["chat_id"]) == str(chat_id)]

    # Answering

    def answer(self, token: str, method: str, parameters: dict[str, Any]) -> Answer:
        with self._changed:
            self.calls.append(Call(method, parameters))
            if self._failures:
                return self._failures.popleft()
        bot = self.bots.get(token)
        if bot is None:
            return _error(401, "Unauthorized")
        handler = getattr(self, f"_{method}", None)
        if handler is None:
            return _error(404, "Not Found")
        result: Answer = handler(bot, parameters)
        return result

    def _getMe(self, bot: Bot, _: dict[str, Any]) -> Answer:
        return _ok(
            {"id": bot.id, "is_bot": True, "first_name": bot.first_name, "username": bot.username}
        )

    def _setWebhook(self, bot: Bot, parameters: dict[str, Any]) -> Answer:
        if not str(parameters.get("url", "")).startswith("https://"):
            return _error(400, "Bad Request: bad webhook: An HTTPS URL must be provided")
        self.webhook = dict(parameters)
        return _ok(True)

    def _deleteWebhook(self, bot: Bot, _: dict[str, Any]) -> Answer:
        self.webhook = None
        return _ok(True)

    def _getUpdates(self, bot: Bot, parameters: dict[str, Any]) -> Answer:
        if self.webhook is not None:
            return _error(409, "Conflict: can't use getUpdates method while webhook is active")
        offset = parameters.get("offset")
        hold = min(float(parameters.get("timeout") or 0), MAX_HOLD)
        with self._changed:
            if isinstance(offset, int):
                while self._updates and self._updates[0]["update_id"] < offset:
                    self._updates.popleft()
            if not self._updates and hold:
                self._changed.wait(hold)
            return _ok(list(self._updates)[:100])

    def _sendMessage(self, bot: Bot, parameters: dict[str, Any]) -> Answer:
        refused = _unparseable(parameters)
        if refused is not None:
            return refused
        message_id = next(self._message_ids)
        self.sent.append({**parameters, "message_id": message_id})
        chat = {"id": parameters.get("chat_id"), "type": "private"}
        return _ok({"message_id": message_id, "chat": chat, "text": parameters.get("text")})

    def _editMessageText(self, bot: Bot, parameters: dict[str, Any]) -> Answer:
        refused = _unparseable(parameters)
        if refused is not None:
            return refused
        self.edited.append(dict(parameters))
        return _ok(True)

    def _answerCallbackQuery(self, bot: Bot, parameters: dict[str, Any]) -> Answer:
        self.answered.append(dict(parameters))
        return _ok(True)


def _ok(result: Any) -> Answer:
    return Answer(200, {"ok": True, "result": result})


def _error(status: int, description: str) -> Answer:
    return Answer(status, {"ok": False, "error_code": status, "description": description})


class _TelegramHTML(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.problem = ""

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag not in TELEGRAM_TAGS:
            self.problem = self.problem or f'Unsupported start tag "{tag}"'
        self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open.pop() != tag:
            self.problem = self.problem or f'Unmatched end tag "{tag}"'


def _unparseable(parameters: dict[str, Any]) -> Answer | None:
    text = parameters.get("text")
    if not isinstance(text, str) or not text.strip():
        return _error(400, "Bad Request: message text is empty")
    if len(text) > MESSAGE_LIMIT:
        return _error(400, "Bad Request: message is too long")
    if parameters.get("parse_mode") == "HTML":
        parser = _TelegramHTML()
        parser.feed(text)
        parser.close()
        if parser.problem or parser.open:
            problem = parser.problem or f'tag "{parser.open[-1]}" is not closed'
            return _error(400, f"Bad Request: can't parse entities: {problem}")
    return None


def _handler_for(telegram: TelegramServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                parameters = json.loads(raw) if raw else {}
            except ValueError:
                parameters = None
            parts = self.path.strip("/").split("/")
            if (
                len(parts) != 2
                or not parts[0].startswith("bot")
                or not isinstance(parameters, dict)
            ):
                answer = _error(404, "Not Found")
            else:
                answer = telegram.answer(parts[0].removeprefix("bot"), parts[1], parameters)
            body = answer.body if isinstance(answer.body, str) else json.dumps(answer.body)
            encoded = body.encode()
            self.send_response(answer.status)
            content_type = "text/html" if isinstance(answer.body, str) else "application/json"
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(encoded)))
            self.end_headers()
            self.wfile.write(encoded)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep the test output clean (and the token out of it)

    return Handler
