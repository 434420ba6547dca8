"""A small client of Discord's HTTP API (discord.com/developers/docs), for the Discord
integration: the connection test, registering the application's slash commands, and
the messages (with buttons) the bot posts to a channel and edits.

The bot token travels in the `Authorization: Bot ...` header, never in a URL; errors
are `DiscordError`s whose messages say what Discord answered and what to check, and
never hold the token.

A rate-limited answer (429) is waited out and the request sent again: Discord says
how long in `retry_after` (seconds, a float), and a bot that ignores it is limited
harder. A wait longer than `MAX_RATE_LIMIT_WAIT_SECONDS`, or a third 429 in a row,
raises `DiscordRateLimited` instead: the caller (a notification's delivery, with its
own backoff) is better placed to wait that long than a request in progress.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

DISCORD_API_URL = "https://discord.com/api/v10"
TIMEOUT = httpx.Timeout(15.0, connect=5.0)
MESSAGE_LIMIT = 2000
MAX_RATE_LIMIT_WAIT_SECONDS = 10.0
RATE_LIMIT_ATTEMPTS = 3
INTERACTION_TOKEN = re.compile(r"^[A-Za-z0-9_.-]{1,500}$")
# Nobody is pinged by what the bot writes: a name in user text stays text.
NO_MENTIONS: dict[str, Any] = {"parse": []}


class DiscordError(Exception):
    """A failure a person can read: what Discord said and what to check."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class DiscordAuthError(DiscordError):
    """Discord refused the bot token (401): reset, or never valid."""


class DiscordNotFound(DiscordError):
    """404: no such channel, message or application (or the bot cannot see it)."""


class DiscordRateLimited(DiscordError):
    def __init__(self, message: str, status: int, retry_after: float) -> None:
        super().__init__(message, status)
        self.retry_after = retry_after


class DiscordUnavailable(DiscordError):
    """The API could not be reached or answered 5xx: worth trying again later."""


class DiscordClient:
    """Requests as one bot. `transport` and `sleep` are for tests."""

    def __init__(
        self,
        token: str,
        *,
        api_url: str = DISCORD_API_URL,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not token:
            raise DiscordError("The Discord integration has no bot token.")
        self.api_url = (api_url or DISCORD_API_URL).rstrip("/")
        self._sleep = sleep
        self._http = httpx.Client(
            timeout=TIMEOUT,
            transport=transport,
            follow_redirects=False,
            headers={
                "Authorization": f"Bot {token}",
                "User-Agent": "DiscordBot (control-plane, 1.0)",
            },
        )

    def __repr__(self) -> str:
        return f"DiscordClient(api_url={self.api_url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> DiscordClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # The calls the product makes

    def get_bot_user(self) -> dict[str, Any]:
        return _object(self.request("GET", "/users/@me"), "GET /users/@me")

    def get_application(self) -> dict[str, Any]:
        return _object(self.request("GET", "/applications/@me"), "GET /applications/@me")

    def set_commands(self, application_id: str, commands: list[dict[str, Any]]) -> list[Any]:
        """Replace the application's global slash commands with `commands`."""
        answer = self.request("PUT", f"/applications/{application_id}/commands", commands)
        return answer if isinstance(answer, list) else []

    def post_message(
        self, channel_id: str, content: str, components: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """Post to a channel (a DM channel included); the message, with its `id`."""
        body = {"content": content, "components": components or [], "allowed_mentions": NO_MENTIONS}
        path = f"/channels/{_snowflake(channel_id)}/messages"
        return _object(self.request("POST", path, body), "POST a message")

    def edit_message(
        self,
        channel_id: str,
        message_id: str,
        content: str,
        components: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Replace a message's text and buttons (no `components`: the buttons go)."""
        body = {"content": content, "components": components or [], "allowed_mentions": NO_MENTIONS}
        path = f"/channels/{_snowflake(channel_id)}/messages/{_snowflake(message_id)}"
        return _object(self.request("PATCH", path, body), "PATCH a message")

    def open_direct_channel(self, user_id: str) -> str:
        """The DM channel between the bot and a user (made if need be): its id."""
        answer = self.request("POST", "/users/@me/channels", {"recipient_id": _snowflake(user_id)})
        channel = _object(answer, "POST /users/@me/channels")
        return _snowflake(str(channel.get("id") or ""))

    def edit_original_response(
        self,
        application_id: str,
        interaction_token: str,
        content: str,
        components: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Write the answer to an interaction that was answered "deferred" (type 5):
        the interaction's token allows it for 15 minutes."""
        body = {"content": content, "components": components or [], "allowed_mentions": NO_MENTIONS}
        answer = self.request("PATCH", _original(application_id, interaction_token), body)
        return _object(answer, "PATCH the original response")

    def delete_original_response(self, application_id: str, interaction_token: str) -> None:
        self.request("DELETE", _original(application_id, interaction_token))

    # Transport

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One call, 429s waited out; its JSON answer, or a `DiscordError`."""
        what = f"{method} {path}"
        for attempt in range(1, RATE_LIMIT_ATTEMPTS + 1):
            response = self._send(method, path, body, what)
            if response.status_code != 429:
                return self._answer(response, what)
            retry_after = _retry_after(response)
            if attempt == RATE_LIMIT_ATTEMPTS or retry_after > MAX_RATE_LIMIT_WAIT_SECONDS:
                raise DiscordRateLimited(
                    f"Discord's rate limit was reached ({what}): retry after {retry_after:g} s.",
                    429,
                    retry_after,
                )
            self._sleep(retry_after)
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(self, method: str, path: str, body: Any, what: str) -> httpx.Response:
        try:
            return self._http.request(
                method, f"{self.api_url}{path}", json=body if body is not None else None
            )
        except httpx.HTTPError as exc:
            # The exception holds the request, whose headers hold the token: not chained.
            unreachable = (
                f"Could not reach Discord's API at {self.api_url} ({what}): {type(exc).__name__}"
            )
        raise DiscordUnavailable(unreachable)

    def _answer(self, response: httpx.Response, what: str) -> Any:
        if response.status_code == 204:
            return None
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.is_success and answer is not None:
            return answer
        status = response.status_code
        said = _said(answer)
        if status >= 500:
            raise DiscordUnavailable(
                f"Discord answered {status} to {what}: try again later.", status
            )
        if status == 401:
            raise DiscordAuthError(
                "Discord refused the bot token (401 Unauthorized): it is wrong or was reset. "
                "Copy the current one from the Developer Portal (your application, Bot, "
                "Reset Token) and save it.",
                status,
            )
        if status == 403:
            raise DiscordError(
                f"Discord refused {what} (403{said}): the bot lacks access to that channel "
                "or the permission to send messages there.",
                status,
            )
        if status == 404:
            raise DiscordNotFound(
                f"Discord found nothing at {what} (404{said}): is the id right, and can the "
                "bot see it?",
                status,
            )
        if answer is None:
            raise DiscordError(
                f"Discord's answer to {what} is not JSON ({status}): is the API URL right "
                f"({DISCORD_API_URL})?",
                status,
            )
        raise DiscordError(f"Discord refused {what} ({status}{said}).", status)


def _retry_after(response: httpx.Response) -> float:
    try:
        answer = response.json()
    except ValueError:
        answer = None
    value = answer.get("retry_after") if isinstance(answer, dict) else None
    if value is None:
        value = response.headers.get("Retry-After")
    try:
        seconds = float(value) if value is not None else 1.0
    except ValueError:
        seconds = 1.0
    return seconds if 0 <= seconds < float("inf") else 1.0


def _said(answer: Any) -> str:
    message = answer.get("message") if isinstance(answer, Mapping) else None
    return f": {str(message)[:300]}" if message else ""


def _snowflake(value: str) -> str:
    # Ids go into the path: anything but digits would change which endpoint is called.
    if not (str(value).isascii() and str(value).isdigit()):
        raise DiscordError(f"{value!r} is not a Discord id (a number).")
    return str(value)


def _original(application_id: str, interaction_token: str) -> str:
    # The token goes into the path: only the characters Discord's tokens are made of.
    if not interaction_token.isascii() or not all(
        c.isalnum() or c in "-_." for c in interaction_token
    ):
        raise DiscordError("That is not an interaction's token.")
    return f"/webhooks/{_snowflake(application_id)}/{interaction_token}/messages/@original"


def _object(answer: Any, what: str) -> dict[str, Any]:
    if not isinstance(answer, dict):
        raise DiscordError(f"Discord's answer to {what} is not an object.")
    return answer
