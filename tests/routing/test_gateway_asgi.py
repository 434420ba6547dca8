"""The gateway's ASGI application (`routing.gateway_asgi`), driven directly with the
messages an ASGI server would send it (tests/routing/asgi_driver.py): host and HTTPS
checks, methods, body limits, clients that go away, failures of the logic.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync

from controlplane.money import dumps_exact, loads_exact
from routing import calls
from routing.models import (
    Budget,
    BudgetDay,
    OperationLog,
    Reservation,
    ServiceKey,
)
from tests.routing.asgi_driver import (
    CHAT_URL,
    HELLO,
    IN_TEST_TRANSACTION,
    MODELS_URL,
    Client,
    assert_closed_as_left_mid_stream,
    assert_nothing_ran,
    bearer,
    body_of,
    chat,
    compatible_model,
    route_chat_to,
    scope,
    serve,
    slow_stream,
)
from tests.routing.openai_server import Answer, OpenAIServer

# -- the host and HTTPS checks ------------------------------------------------------------


@pytest.mark.django_db
def test_a_host_not_in_allowed_hosts_gets_400_and_nothing_runs(
    issued: tuple[ServiceKey, str], budget: Budget
) -> None:
    key, raw = issued

    answers = [
        chat(raw, host="evil.example"),
        chat(raw, host="localhost.evil.example:8000"),
        serve(scope(MODELS_URL, "GET", host="evil.example", headers=bearer(raw)), body_of(b"")),
    ]

    for answer in answers:
        assert answer.status == 400
        assert answer.error()["code"] == "invalid_host"
        assert "evil.example" in answer.error()["message"]
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert_nothing_ran(key)


@pytest.mark.django_db
def test_a_host_in_allowed_hosts_is_served_with_or_without_its_port(
    issued: tuple[ServiceKey, str],
) -> None:
    _, raw = issued

    assert chat(raw, host="localhost").status == 200
    assert chat(raw, host="127.0.0.1:8000").status == 200
    assert OperationLog.objects.count() == 2


@pytest.mark.django_db
def test_with_https_required_a_plain_http_request_gets_403_and_nothing_runs(
    issued: tuple[ServiceKey, str], budget: Budget, settings: Any
) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 3600
    key, raw = issued

    answer = chat(raw, scheme="http")

    assert answer.status == 403
    assert answer.error()["code"] == "https_required"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert "strict-transport-security" not in answer.headers  # only over HTTPS
    assert_nothing_ran(key)


@pytest.mark.django_db
def test_with_https_required_an_https_request_is_served_with_hsts(
    issued: tuple[ServiceKey, str], settings: Any
) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_HSTS_PRELOAD = False
    _, raw = issued

    answer = chat(raw, scheme="https")

    assert answer.status == 200
    assert answer.headers["strict-transport-security"] == "max-age=3600; includeSubDomains"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert loads_exact(answer.body)["object"] == "chat.completion"
    assert OperationLog.objects.get().status == "ok"


@pytest.mark.django_db
def test_behind_a_proxy_its_forwarded_scheme_decides_whether_the_request_is_https(
    issued: tuple[ServiceKey, str], settings: Any
) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 60
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = False
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    _, raw = issued

    forwarded_https = chat(raw, scheme="http", headers={"X-Forwarded-Proto": "https"})
    forwarded_http = chat(raw, scheme="https", headers={"X-Forwarded-Proto": "http"})

    assert forwarded_https.status == 200
    assert forwarded_https.headers["strict-transport-security"] == "max-age=60"
    # The proxy said the client came over plain HTTP, whatever the hop to us was.
    assert forwarded_http.status == 403
    assert forwarded_http.error()["code"] == "https_required"
    assert OperationLog.objects.count() == 1


@pytest.mark.django_db
def test_without_https_no_hsts_header_is_sent_even_when_configured(
    issued: tuple[ServiceKey, str], settings: Any
) -> None:
    settings.SECURE_SSL_REDIRECT = False
    settings.SECURE_HSTS_SECONDS = 3600
    _, raw = issued

    answer = chat(raw, scheme="http")

    assert answer.status == 200
    assert "strict-transport-security" not in answer.headers
    assert answer.headers["x-content-type-options"] == "nosniff"


# -- methods and bodies -----------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "method", "allowed"),
    [
        (CHAT_URL, "GET", "POST"),
        (CHAT_URL, "PUT", "POST"),
        (CHAT_URL, "HEAD", "POST"),
        (MODELS_URL, "POST", "GET"),
        (MODELS_URL, "DELETE", "GET"),
    ],
)
def test_a_wrong_method_gets_405_naming_the_allowed_one(
    issued: tuple[ServiceKey, str], path: str, method: str, allowed: str
) -> None:
    key, raw = issued

    answer = serve(scope(path, method, headers=bearer(raw)), body_of({"messages": HELLO}))

    assert answer.status == 405
    assert answer.headers["allow"] == allowed
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.error()["code"] == "method_not_allowed"
    assert_nothing_ran(key)


def _body_of_size(size: int) -> bytes:
    """A valid chat request of exactly `size` bytes."""
    empty = dumps_exact({"messages": [{"role": "user", "content": ""}]}).encode()
    body = dumps_exact({"messages": [{"role": "user", "content": "x" * (size - len(empty))}]})
    assert len(body.encode()) == size
    return body.encode()


@pytest.mark.django_db
def test_a_body_over_data_upload_max_memory_size_gets_413_and_nothing_is_spent(
    issued: tuple[ServiceKey, str], budget: Budget, settings: Any
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 200
    key, raw = issued
    body = _body_of_size(201)
    # Sent in pieces, as a server passes a large body on: the sum counts.
    pieces = [body[:100], body[100:200], body[200:]]
    requests = [
        {"type": "http.request", "body": piece, "more_body": n < len(pieces) - 1}
        for n, piece in enumerate(pieces)
    ]

    answer = serve(scope(CHAT_URL, headers=bearer(raw)), requests)

    assert answer.status == 413
    assert answer.error()["code"] == "request_too_large"
    assert "200" in answer.error()["message"]
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert_nothing_ran(key)


@pytest.mark.django_db
def test_a_body_of_exactly_the_limit_is_served(
    issued: tuple[ServiceKey, str], settings: Any
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 200
    _, raw = issued
    body = _body_of_size(200)
    requests = [
        {"type": "http.request", "body": body[:150], "more_body": True},
        {"type": "http.request", "body": body[150:], "more_body": False},
    ]

    answer = serve(scope(CHAT_URL, headers=bearer(raw)), requests)

    assert answer.status == 200
    assert OperationLog.objects.get().status == "ok"


@pytest.mark.django_db
def test_a_whole_answer_says_its_length_and_a_stream_does_not(
    issued: tuple[ServiceKey, str],
) -> None:
    _, raw = issued

    whole = chat(raw)
    refused = chat(raw, {"messages": "not a list"})
    streamed = chat(raw, {"messages": HELLO, "stream": True})

    assert (whole.status, refused.status, streamed.status) == (200, 400, 200)
    for answer in (whole, refused):
        assert answer.headers["content-length"] == str(len(answer.body))
    assert "content-length" not in streamed.headers
    assert streamed.body.endswith(b"data: [DONE]\n\n")


@pytest.mark.django_db
def test_without_a_body_limit_a_large_body_is_served(
    issued: tuple[ServiceKey, str], settings: Any
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = None
    _, raw = issued

    # Over Django's default 2.5 MB, in a field that is passed on (not in the prompt).
    large = {"messages": HELLO, "metadata": {"note": "x" * 3_000_000}}

    answer = serve(scope(CHAT_URL, headers=bearer(raw)), body_of(large))

    assert answer.status == 200


@pytest.mark.django_db
@pytest.mark.parametrize(
    "requests",
    [
        [{"type": "http.disconnect"}],
        [
            {"type": "http.request", "body": b'{"messages": [', "more_body": True},
            {"type": "http.disconnect"},
        ],
    ],
    ids=["before-any-body", "mid-body"],
)
def test_a_client_gone_before_its_body_ends_gets_nothing_and_nothing_runs(
    issued: tuple[ServiceKey, str], budget: Budget, requests: list[dict[str, Any]]
) -> None:
    key, raw = issued

    answer = serve(scope(CHAT_URL, headers=bearer(raw)), requests)

    assert answer.sent == []
    assert_nothing_ran(key)


# -- failures of the logic ---------------------------------------------------------------


@pytest.mark.django_db
def test_an_unexpected_error_in_the_logic_gets_500_json_and_is_logged(
    issued: tuple[ServiceKey, str], monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    _, raw = issued

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the logic broke")

    monkeypatch.setattr(calls, "complete", broken)
    with caplog.at_level(logging.ERROR, logger="routing.gateway_asgi"):
        answer = chat(raw)

    assert answer.status == 500
    error = answer.error()
    assert error["code"] == "server_error"
    assert "the logic broke" not in error["message"]  # details go to the log only
    assert answer.headers["x-content-type-options"] == "nosniff"
    (record,) = [r for r in caplog.records if r.name == "routing.gateway_asgi"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)


@pytest.mark.django_db
def test_a_whole_answer_the_server_could_not_deliver_is_still_recorded(
    issued: tuple[ServiceKey, str],
    budget: Budget,
    upstream: OpenAIServer,
    committed: Callable[[], Any],
) -> None:
    _, raw = issued
    with committed():
        route_chat_to(compatible_model(upstream, "acme/whole"))
    upstream.reply(Answer("Delivered to nobody."))
    client = Client(body_of({"messages": HELLO}))

    class ClientGone(OSError):
        """What the ASGI spec lets a server raise from send() once the client left."""

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            raise ClientGone
        await client.send(message)

    with contextlib.suppress(ClientGone):
        async_to_sync(IN_TEST_TRANSACTION)(
            scope(CHAT_URL, headers=bearer(raw)), client.receive, send
        )

    assert client.status == 200
    row = OperationLog.objects.get()
    assert Reservation.objects.get(request_id=row.request_id).status == "settled"
    assert BudgetDay.objects.get(budget=budget).reserved == 0


# -- streams the client leaves -----------------------------------------------------------------


@pytest.mark.django_db
def test_a_client_that_leaves_mid_stream_closes_the_call_which_settles_and_logs(
    issued: tuple[ServiceKey, str],
    budget: Budget,
    upstream: OpenAIServer,
    committed: Callable[[], Any],
) -> None:
    _, raw = issued
    with committed():
        route_chat_to(compatible_model(upstream, "acme/slow"))
    upstream.reply(slow_stream("acme/slow"))

    answer = serve(
        scope(CHAT_URL, headers=bearer(raw)),
        body_of({"messages": HELLO, "stream": True}),
        leave_after=2,
    )

    assert_closed_as_left_mid_stream(answer, budget)
