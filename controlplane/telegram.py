"""A small client of Telegram's Bot API (core.telegram.org/bots/api), for the
Telegram integration: the connection test, the webhook's registration, long polling,
and the replies and messages the bot sends.

The Bot API carries the bot's token in the URL's path (`/bot<token>/<method>`), so
the token is in every URL this client requests: errors are `TelegramError`s whose
messages name the API's base URL and the method, never the URL itself, and a filter
on httpx's loggers masks any token in what they log.

A rate-limited answer (429) raises `TelegramRateLimited` with Telegram's
`retry_after`; the caller decides whether to wait, the client never sleeps.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

TELEGRAM_API_URL = "https://api.telegram.org"
TIMEOUT = httpx.Timeout(15.0, connect=5.0)
# A long poll is held open by Telegram for its `timeout`: the read waits that long more.
LONG_POLL_MARGIN_SECONDS = 10.0
# A token as BotFather issues it: the bot's id, a colon, a secret part.
TOKEN_IN_TEXT = re.compile(r"bot\d+:[A-Za-z0-9_-]+")


class TelegramError(Exception):
    """A failure a person can read: what Telegram said and what to check."""

    def __init__(self, message: str, status: int | None = None, description: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.description = description


class TelegramAuthError(TelegramError):
    """Telegram refused the token (401): revoked, or never valid."""


class TelegramConflict(TelegramError):
    """409: another getUpdates is running, or a webhook is set while polling."""


class TelegramRateLimited(TelegramError):
    def __init__(self, message: str, status: int, retry_after: int) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after


class TelegramUnavailable(TelegramError):
    """The API could not be reached or answered 5xx: worth trying again later."""


def mask_tokens(text: str) -> str:
    return TOKEN_IN_TEXT.sub("bot<token>", text)


class _MaskTokens(logging.Filter):
    """httpx logs every request's URL (at INFO), which holds the token."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask_tokens(record.getMessage())
        record.args = None
        return True


for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).addFilter(_MaskTokens())


@dataclass(frozen=True)
class InlineButton:
    """A button under a message; pressing it sends `callback_data` (at most 64 bytes)
    back to the bot as a callback query."""

    text: str
    callback_data: str


type Keyboard = tuple[tuple[InlineButton, ...], ...]


def keyboard_markup(keyboard: Keyboard) -> dict[str, Any]:
    return {
        "inline_keyboard": [
            [{"text": b.text, "callback_data": b.callback_data} for b in row] for row in keyboard
        ]
    }


class TelegramClient:
    """Requests to one bot. `transport` is for tests."""

    def __init__(
        self,
        token: str,
        *,
        api_url: str = TELEGRAM_API_URL,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not token:
            raise TelegramError("The Telegram integration has no bot token.")
        self._token = token
        self.api_url = (api_url or TELEGRAM_API_URL).rstrip("/")
        self._http = httpx.Client(timeout=TIMEOUT, transport=transport, follow_redirects=False)

    def __repr__(self) -> str:
        return f"TelegramClient(api_url={self.api_url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> TelegramClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # The methods the product uses

    def get_me(self) -> dict[str, Any]:
        return _object(self.call("getMe"), "getMe")

    def set_webhook(self, url: str, secret_token: str, allowed_updates: list[str]) -> None:
        self.call(
            "setWebhook",
            {"url": url, "secret_token": secret_token, "allowed_updates": allowed_updates},
        )

    def delete_webhook(self) -> None:
        self.call("deleteWebhook", {"drop_pending_updates": False})

    def get_updates(
        self, offset: int | None, timeout: int, allowed_updates: list[str]
    ) -> list[dict[str, Any]]:
        parameters: dict[str, Any] = {"timeout": timeout, "allowed_updates": allowed_updates}
        if offset is not None:
            parameters["offset"] = offset
        result = self.call(
            "getUpdates", parameters, read_timeout=timeout + LONG_POLL_MARGIN_SECONDS
        )
        if not isinstance(result, list):
            raise TelegramError("Telegram's answer to getUpdates is not a list of updates.")
        return [update for update in result if isinstance(update, dict)]

    def send_message(
        self,
        chat_id: str | int,
        text: str,
        *,
        parse_mode: str = "HTML",
        keyboard: Keyboard = (),
    ) -> dict[str, Any]:
        parameters: dict[str, Any] = {
            "chat_id": chat_id,
            "text": text,
            "parse_mode": parse_mode,
            "link_preview_options": {"is_disabled": True},
        }
        if keyboard:
            parameters["reply_markup"] = keyboard_markup(keyboard)
        return _object(self.call("sendMessage", parameters), "sendMessage")

    def edit_message_text(
        self,
        chat_id: str | int,
        message_id: int,
        text: str,
        *,
        parse_mode: str = "HTML",
        keyboard: Keyboard = (),
    ) -> Any:
        parameters: dict[str, Any] = {
            "chat_id": chat_id,
            "message_id": message_id,
            "text": text,
            "parse_mode": parse_mode,
            "link_preview_options": {"is_disabled": True},
        }
        # Without a reply_markup the edit removes the message's buttons.
        if keyboard:
            parameters["reply_markup"] = keyboard_markup(keyboard)
        return self.call("editMessageText", parameters)

    def answer_callback_query(self, callback_query_id: str, text: str = "") -> None:
        parameters: dict[str, Any] = {"callback_query_id": callback_query_id}
        if text:
            parameters["text"] = text[:200]
        self.call("answerCallbackQuery", parameters)

    # Transport

    def call(
        self,
        method: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        read_timeout: float | None = None,
    ) -> Any:
        """POST a method with JSON parameters; its `result`, or a `TelegramError`."""
        url = f"{self.api_url}/bot{self._token}/{method}"
        timeout = TIMEOUT if read_timeout is None else httpx.Timeout(read_timeout, connect=5.0)
        try:
            response = self._http.post(url, json=dict(parameters or {}), timeout=timeout)
        except httpx.HTTPError as exc:
            # httpx's exception holds the request and its URL, which holds the token: it
            # is not chained (raised outside this block), and its message is masked.
            unreachable = (
                f"Could not reach Telegram's Bot API at {self.api_url} ({method}): "
                f"{type(exc).__name__}{self._detail(exc)}"
            )
        else:
            return self._result(response, method)
        raise TelegramUnavailable(unreachable)

    def _detail(self, exc: httpx.HTTPError) -> str:
        text = mask_tokens(str(exc)).replace(self._token, "<token>")
        return f": {text[:200]}" if text else ""

    def _result(self, response: httpx.Response, method: str) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            if response.status_code >= 500:
                raise TelegramUnavailable(
                    f"Telegram answered {response.status_code} to {method}: try again later.",
                    response.status_code,
                )
            raise TelegramError(
                f"Telegram's answer to {method} is not the Bot API's JSON "
                f"({response.status_code}): is the API URL right ({TELEGRAM_API_URL})?",
                response.status_code,
            )
        if body.get("ok") is True and response.is_success:
            return body.get("result")
        raise self._error(response.status_code, body, method)

    def _error(self, status: int, body: dict[str, Any], method: str) -> TelegramError:
        description = str(body.get("description") or "")[:300]
        description = mask_tokens(description).replace(self._token, "<token>")
        said = f": {description}" if description else ""
        code = body.get("error_code")
        status = code if isinstance(code, int) else status
        if status == 401:
            return TelegramAuthError(
                "Telegram refused the bot token (401 Unauthorized): it is wrong or was "
                "revoked. Get the current one from @BotFather (/token) and save it.",
                status,
                description,
            )
        if status == 404 and method == "getMe":
            return TelegramAuthError(
                "Telegram answered 404 to getMe: the bot token is malformed (it looks like "
                "123456:ABC-DEF...) or the API URL is not the Bot API's.",
                status,
                description,
            )
        if status == 429:
            parameters = body.get("parameters")
            retry = parameters.get("retry_after") if isinstance(parameters, dict) else None
            retry_after = retry if isinstance(retry, int) and retry >= 0 else 1
            return TelegramRateLimited(
                f"Telegram's rate limit was reached ({method}): retry after {retry_after} s.",
                status,
                retry_after,
            )
        if status == 409:
            return TelegramConflict(
                f"Telegram refused {method} (409{said}): another process is polling this "
                "bot, or a webhook is set while the integration polls.",
                status,
                description,
            )
        if status >= 500:
            return TelegramUnavailable(
                f"Telegram answered {status} to {method}{said}: try again later.",
                status,
                description,
            )
        return TelegramError(f"Telegram refused {method} ({status}{said}).", status, description)


def _object(result: Any, method: str) -> dict[str, Any]:
    if not isinstance(result, dict):
        raise TelegramError(f"Telegram's answer to {method} has no result object.")
    return result
