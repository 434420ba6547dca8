"""Fuzzing the OpenAI-compatible gateway: any body, header and query string sent to
`/v1/chat/completions` (streamed or not) and `/v1/models` gets an answer below 500,
a 4xx carries an OpenAI-style JSON error, a stream always ends with `[DONE]`, and
afterwards the books are whole: no reservation is held without a live call and
every reserved call has its log row.

Requests go through the gateway's ASGI application as daphne would send them
(`tests.routing.asgi_driver`), its logic in the test's transaction; the examples of
a test share its database, as a fuzzer's requests would.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from hypothesis import given
from hypothesis import strategies as st

from controlplane.money import dumps_exact, loads_exact
from routing.models import AIModel, OperationLog, Reservation, ServiceKey
from routing.providers import ChatRequest, Completion, Reply, StreamChunk, Usage
from routing.providers.offline import complete_answer, stream_answer
from tests.fuzz.conftest import record_status
from tests.routing import asgi_driver, factories
from tests.scripted_providers import use_scripted

pytestmark = pytest.mark.django_db

CHAT = "POST /v1/chat/completions"
CHAT_STREAMED = "POST /v1/chat/completions (stream)"
MODELS = "GET /v1/models"
UPSTREAM = "POST /v1/chat/completions (misreporting upstream)"
OPERATIONS = ["chat", "priced", "refund", "dear", "no-such-operation"]


class PricedEcho:
    """An upstream that always answers, reporting no cost: priced from the catalog."""

    label = "priced-echo"

    def complete(self, request: ChatRequest) -> Completion:
        return complete_answer(Reply("A fuzzed answer."), request)

    def stream(self, request: ChatRequest) -> Iterator[StreamChunk | Completion]:
        return stream_answer(Reply("A fuzzed answer."), request)


@pytest.fixture
def raw_key(db: Any) -> Iterator[str]:
    """A service key, and operations that reach every part of the call path: the
    free offline model (`chat`), a priced model (`priced`), one that spends money
    (`refund`, approval rule 1) and one over its approval threshold (`dear`), under
    a global budget of $100 a day."""
    provider = factories.provider(name="fuzzed-upstream")
    priced = factories.model(provider, "fuzz/priced", context_length=100_000)
    factories.route("priced", priced)
    factories.route("refund", priced, spends_money=True)
    factories.route("dear", priced, approval_threshold="0.001")
    factories.budget("100")
    assert AIModel.objects.filter(model_id="offline/echo").exists()
    _, raw = ServiceKey.issue(name="fuzzer", service="fuzzing")
    with use_scripted("fuzzed-upstream", PricedEcho()):
        yield raw


# -- what is sent ---------------------------------------------------------------------

# Text a header can carry (no control characters: servers refuse those before the app).
header_text = st.text(st.characters(codec="latin-1", exclude_categories=("Cc",)), max_size=300).map(
    str.strip
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**120)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
    | st.sampled_from(["", "\x00", "a\x00b", "user", "function", "tool", "assistant"])
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def mostly(valid: st.SearchStrategy[Any], weird: st.SearchStrategy[Any]) -> Any:
    """Valid five times in six: a request must get past the first check often enough
    to reach the provider, pricing and the books."""
    return st.one_of(valid, valid, valid, valid, valid, weird)


roles = mostly(st.sampled_from(["system", "user", "assistant", "tool", "developer"]), json_values)
function = st.fixed_dictionaries(
    {"name": mostly(st.sampled_from(["search", "lookup"]), json_values)},
    optional={
        "parameters": mostly(
            st.just({"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}),
            json_values,
        ),
        "description": json_values,
    },
)
tool = st.fixed_dictionaries(
    {"type": mostly(st.just("function"), json_values), "function": mostly(function, json_values)}
)
tools = mostly(st.lists(mostly(tool, json_values), max_size=3), json_values)
tool_call = st.fixed_dictionaries(
    {
        "id": mostly(st.text(max_size=8), json_values),
        "type": mostly(st.just("function"), json_values),
        "function": mostly(
            st.fixed_dictionaries(
                {
                    "name": mostly(st.just("search"), json_values),
                    "arguments": mostly(st.just('{"q": "logs"}'), json_values),
                }
            ),
            json_values,
        ),
    }
)
message = st.fixed_dictionaries(
    {
        "role": roles,
        "content": mostly(
            st.sampled_from(["Hello", "please search the logs", "lookup the deploy"])
            | st.text(max_size=60)
            | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": st.text()})),
            json_values,
        ),
    },
    optional={
        "tool_calls": mostly(st.lists(mostly(tool_call, json_values), max_size=2), json_values),
        "tool_call_id": mostly(st.text(max_size=8), json_values),
        "name": mostly(st.text(max_size=8), json_values),
    },
)
token_counts = mostly(
    st.integers(min_value=1, max_value=4000),
    st.sampled_from([10**13, 10**20, 10**30, 10**100, 2**63, 100_000, 100_001])
    | st.integers(min_value=-5, max_value=10**120)
    | json_values,
)
chat_requests = st.fixed_dictionaries(
    {
        "messages": mostly(
            st.lists(mostly(message, json_values), min_size=1, max_size=3), json_values
        )
    },
    optional={
        "model": mostly(st.sampled_from(["offline/echo", "fuzz/priced", ""]), json_values),
        "tools": tools,
        "tool_choice": mostly(st.sampled_from(["auto", "none"]), json_values),
        "max_tokens": token_counts,
        "max_completion_tokens": token_counts,
        "stream": mostly(st.booleans(), json_values),
        "stream_options": mostly(st.just({"include_usage": True}), json_values),
        "temperature": mostly(st.floats(0, 2), json_values),
        "user": mostly(st.text(max_size=8), json_values),
    },
)


# Well-formed requests with arbitrary values: they get past the shape check, so they
# reach routing, approvals, the reservation, the provider, pricing and the books.
any_text = st.text(max_size=80).filter(lambda text: "\x00" not in text)
well_formed_tool = st.fixed_dictionaries(
    {
        "type": st.just("function"),
        "function": st.fixed_dictionaries(
            {"name": st.sampled_from(["search", "lookup"]) | any_text.filter(bool)},
            optional={
                "description": any_text,
                "parameters": st.just(
                    {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
                )
                | st.just({}),
            },
        ),
    }
)
well_formed_message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "user", "assistant", "tool", "developer"]),
        "content": st.sampled_from(["Hello", "please search the logs", "lookup"]) | any_text,
    },
    optional={
        "tool_calls": st.lists(
            st.fixed_dictionaries(
                {
                    "id": any_text,
                    "type": st.just("function"),
                    "function": st.fixed_dictionaries({"name": any_text, "arguments": any_text}),
                }
            ),
            max_size=2,
        ),
        "tool_call_id": any_text,
    },
)
well_formed_requests = st.fixed_dictionaries(
    {"messages": st.lists(well_formed_message, min_size=1, max_size=3)},
    optional={
        "model": any_text,
        "tools": st.lists(well_formed_tool, max_size=3),
        "max_tokens": st.integers(min_value=1, max_value=40_000),
        "max_completion_tokens": st.integers(min_value=1, max_value=40_000),
        "temperature": st.decimals(min_value=0, max_value=2, places=2),
        "stream": st.booleans(),
    },
)


def _deeply_nested(depth: int) -> bytes:
    inner = b'{"role": "user", "content": "hi"}'
    return b'{"messages": [' + b"[" * depth + inner + b"]" * depth + b"]}"


raw_bodies = st.one_of(
    st.integers(min_value=1, max_value=6000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(min_value=50, max_value=6000).map(_deeply_nested),
    st.sampled_from(
        [
            b"",
            b"{",
            b"\xff\xfe",
            b'{"messages": [{"role": "user", "content": NaN}]}',
            b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": Infinity}',
            b'{"messages": [{"role": "user", "content": "hi"}], "temperature": -Infinity}',
            b'{"messages": [{"role": "user\\u0000", "content": "hi"}]}',
            b'{"messages": [{"role": "user", "content": "a\\u0000b"}]}',
            b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e400}',
            b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1'
            + b"0" * 5000
            + b"}",
        ]
    ),
    st.binary(max_size=200),
)


def _body(payload: Any) -> bytes:
    if isinstance(payload, bytes):
        return payload
    # NaN and Infinity go out as JavaScript writes them: invalid JSON a client may send.
    return dumps_exact(payload).encode()


bodies = st.one_of(
    chat_requests.map(_body), chat_requests.map(_body), json_values.map(_body), raw_bodies
)
query_strings = st.text(st.characters(codec="ascii", exclude_categories=("Cc",)), max_size=60).map(
    lambda text: text.encode()
)


@st.composite
def headers(draw: st.DrawFn, raw_key: str) -> dict[str, str]:
    sent: dict[str, str] = {"Content-Type": draw(st.sampled_from(["application/json", ""]))}
    auth = draw(st.sampled_from(["valid"] * 8 + ["none", "fuzzed"]), label="authorization")
    if auth == "valid":
        sent["Authorization"] = f"Bearer {raw_key}"
    elif auth == "fuzzed":
        sent["Authorization"] = draw(header_text | st.builds("Bearer {}".format, header_text))
    operation = draw(
        st.sampled_from([*OPERATIONS, "", "", "", "fuzzed", "long"]), label="X-Operation"
    )
    if operation == "fuzzed":
        sent["X-Operation"] = draw(header_text)
    elif operation == "long":
        sent["X-Operation"] = "op-" + "x" * draw(st.integers(min_value=98, max_value=400))
    elif operation:
        sent["X-Operation"] = operation
    mode = draw(st.sampled_from(["", "", "", "normal", "code", "fuzzed", "long"]), label="X-Mode")
    if mode == "fuzzed":
        sent["X-Mode"] = draw(header_text)
    elif mode == "long":
        sent["X-Mode"] = "m" * draw(st.integers(min_value=19, max_value=300))
    elif mode:
        sent["X-Mode"] = mode
    approval = draw(st.sampled_from(["", "", "", "", "number", "fuzzed"]), label="X-Approval-Id")
    if approval == "number":
        sent["X-Approval-Id"] = str(draw(st.integers(min_value=0, max_value=10**30)))
    elif approval == "fuzzed":
        sent["X-Approval-Id"] = draw(header_text)
    return {name: value for name, value in sent.items() if value}


# -- what must come back --------------------------------------------------------------


def _send(
    endpoint: str,
    method: str,
    path: str,
    sent_headers: dict[str, str],
    body: bytes,
    query: bytes = b"",
) -> asgi_driver.Client:
    """Send one request and tally its answer. An application that raises is tallied
    as what a server would answer: 500 before the answer started, else the started
    status (and the client is left waiting for the rest)."""
    request_scope = asgi_driver.scope(path, method, headers=sent_headers)
    request_scope["query_string"] = query
    client = asgi_driver.Client(asgi_driver.body_of(body))
    try:
        async_to_sync(asgi_driver.IN_TEST_TRANSACTION)(request_scope, client.receive, client.send)
    except Exception as crash:
        record_status(endpoint, client.status if client.sent else 500)
        raise AssertionError(f"the gateway raised {crash!r}") from crash
    record_status(endpoint, client.status)
    return client


def _assert_well_answered(answer: asgi_driver.Client) -> None:
    assert answer.finished, "the answer was never ended"
    assert answer.status < 500, answer.body[:500]
    content_type = answer.headers["content-type"]
    if answer.status >= 400:
        error = answer.error()  # JSON, OpenAI-style
        assert isinstance(error["message"], str)
        assert isinstance(error["type"], str)
        assert error["message"]
        assert error["type"]
        assert "code" in error
    elif content_type == "text/event-stream":
        events = [part for part in answer.body.decode().split("\n\n") if part]
        assert events[-1] == "data: [DONE]", events[-3:]
        for event in events[:-1]:
            loads_exact(event.removeprefix("data: "))
    else:
        assert content_type == "application/json"
        assert isinstance(loads_exact(answer.body), dict)


def _assert_books_whole() -> None:
    # Every call here ran to its end in the request: nothing may still be held.
    assert not Reservation.objects.filter(status=Reservation.Status.HELD).exists()
    reserved = set(Reservation.objects.values_list("request_id", flat=True))
    logged = set(OperationLog.objects.values_list("request_id", flat=True))
    assert reserved <= logged, f"reserved without a log row: {sorted(reserved - logged)[:5]}"
    for cost in OperationLog.objects.values_list("cost", flat=True):
        assert isinstance(cost, Decimal)
        assert cost.is_finite()
        assert cost >= 0


def _streamed(body: bytes) -> bool:
    try:
        parsed = loads_exact(body)
    except (ValueError, RecursionError):
        return False
    return isinstance(parsed, dict) and parsed.get("stream") is True


@given(data=st.data(), body=bodies, query=query_strings)
def test_chat_completions_never_fails_and_leaves_the_books_whole(
    raw_key: str, data: st.DataObject, body: bytes, query: bytes
) -> None:
    sent_headers = data.draw(headers(raw_key))
    endpoint = CHAT_STREAMED if _streamed(body) else CHAT
    answer = _send(endpoint, "POST", asgi_driver.CHAT_URL, sent_headers, body, query)
    _assert_well_answered(answer)
    _assert_books_whole()


@given(data=st.data(), request=chat_requests)
def test_a_streamed_chat_completion_always_ends_with_done_or_a_json_error(
    raw_key: str, data: st.DataObject, request: dict[str, Any]
) -> None:
    sent_headers = data.draw(headers(raw_key))
    streamed = _body({**request, "stream": True})
    answer = _send(CHAT_STREAMED, "POST", asgi_driver.CHAT_URL, sent_headers, streamed)
    _assert_well_answered(answer)
    _assert_books_whole()


@given(
    request=well_formed_requests,
    operation=st.sampled_from(OPERATIONS),
    approval=st.none() | st.integers(min_value=1, max_value=50),
)
def test_well_formed_calls_are_answered_and_recorded(
    raw_key: str, request: dict[str, Any], operation: str, approval: int | None
) -> None:
    sent_headers = {**asgi_driver.bearer(raw_key), "X-Operation": operation}
    if approval is not None:
        sent_headers["X-Approval-Id"] = str(approval)
    endpoint = CHAT_STREAMED if request.get("stream") else CHAT
    answer = _send(endpoint, "POST", asgi_driver.CHAT_URL, sent_headers, _body(request))
    _assert_well_answered(answer)
    # Refusals are the call path's own (a context too short, an approval, a budget, an
    # unknown operation); nothing a well-formed request sends is refused as malformed.
    if answer.status >= 400:
        assert answer.error()["code"] in {
            "context_length_exceeded",
            "approval_required",
            "budget_exceeded",
            "not_routable",
        }, answer.error()
    _assert_books_whole()


class Misreporting:
    """An upstream that answers and reports whatever usage it likes."""

    label = "misreporting"

    def __init__(self, usage: Usage, cost: Decimal | None) -> None:
        self.reply = Reply("A fuzzed answer.", usage=usage, cost=cost)

    def complete(self, request: ChatRequest) -> Completion:
        return complete_answer(self.reply, request)

    def stream(self, request: ChatRequest) -> Iterator[StreamChunk | Completion]:
        return stream_answer(self.reply, request)


counts = st.integers(min_value=-(10**6), max_value=10**40) | st.integers(0, 5000)
# What no provider could mean (refused and flagged), or a plausible cost.
reported_costs = (
    st.none()
    | st.decimals(allow_nan=True, allow_infinity=True).filter(
        lambda cost: not cost.is_finite() or cost < 0 or cost > 1000
    )
    | st.decimals(min_value=0, max_value="0.01", places=18)
)


@given(
    usage=st.builds(
        Usage,
        prompt_tokens=counts,
        completion_tokens=counts,
        cached_tokens=counts,
        cache_write_tokens=counts,
        reasoning_tokens=counts,
    ),
    cost=reported_costs,
    stream=st.booleans(),
)
def test_whatever_an_upstream_reports_the_books_stay_whole(
    raw_key: str, usage: Usage, cost: Decimal | None, stream: bool
) -> None:
    headers = {**asgi_driver.bearer(raw_key), "X-Operation": "priced"}
    body = _body({"messages": [{"role": "user", "content": "Hello"}], "stream": stream})
    with use_scripted("fuzzed-upstream", Misreporting(usage, cost)):
        answer = _send(UPSTREAM, "POST", asgi_driver.CHAT_URL, headers, body)
    _assert_well_answered(answer)
    if answer.status == 200 and not stream:
        reported = Decimal(answer.headers["x-cost-usd"])
        assert reported.is_finite()
        assert reported >= 0
    _assert_books_whole()


@given(
    data=st.data(),
    method=st.sampled_from(["GET", "GET", "GET", "POST", "DELETE"]),
    body=bodies,
    query=query_strings,
)
def test_models_never_fails(
    raw_key: str, data: st.DataObject, method: str, body: bytes, query: bytes
) -> None:
    sent_headers = data.draw(headers(raw_key))
    endpoint = MODELS if method == "GET" else f"{method} /v1/models"
    answer = _send(endpoint, method, asgi_driver.MODELS_URL, sent_headers, body, query)
    _assert_well_answered(answer)
    if answer.status == 200:
        listed = loads_exact(answer.body)["data"]
        assert listed
        assert all(isinstance(model["id"], str) for model in listed)
