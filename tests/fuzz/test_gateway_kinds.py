"""Fuzzing `/v1/embeddings` and `/v1/audio/speech` as test_gateway.py fuzzes
`/v1/chat/completions`: any body, header and query string gets an answer below 500, a
4xx carries an OpenAI-style JSON error, audio is answered as audio, and afterwards the
books are whole (no reservation held, every reserved call logged, no negative cost).

Priced models of both kinds sit behind a real local upstream (`OpenAIServer`) that
also reports whatever usage a test draws; the seeded routes answer with the offline
model.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.money import loads_exact
from routing.models import AIModel, Provider, ServiceKey
from routing.models.catalog import CallKind
from tests.fuzz.test_gateway import (
    _assert_books_whole,
    _assert_well_answered,
    _body,
    _send,
    headers,
    json_values,
    mostly,
    query_strings,
    raw_bodies,
)
from tests.routing import asgi_driver, factories
from tests.routing.openai_server import Audio, Embeddings, OpenAIServer

pytestmark = pytest.mark.django_db

EMBEDDINGS_URL = "/v1/embeddings"
SPEECH_URL = "/v1/audio/speech"
OPERATIONS = ["embeddings", "speech", "priced-embeddings", "priced-speech", "dear-speech", "chat"]
REFUSALS = {"approval_required", "budget_exceeded", "not_routable"}


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as upstream:
        yield upstream


@pytest.fixture
def raw_key(db: Any, server: OpenAIServer) -> str:
    """A service key; operations to the offline model (`embeddings`, `speech`), to
    priced models of each kind behind a local upstream, and one over its approval
    threshold (`dear-speech`), under a global budget of $100 a day."""
    provider = factories.provider(server, name="fuzzed-upstream")
    embedder = AIModel.objects.create(
        provider=provider,
        model_id="fuzz/embedder",
        kind=CallKind.EMBEDDING,
        context_length=8192,
        price_prompt=Decimal("0.00000002"),
    )
    speaker = AIModel.objects.create(
        provider=provider,
        model_id="fuzz/speaker",
        kind=CallKind.SPEECH,
        price_character=Decimal("0.000015"),
    )
    factories.route("priced-embeddings", embedder)
    factories.route("priced-speech", speaker)
    factories.route("dear-speech", speaker, approval_threshold="0.00001")
    factories.budget("100")
    assert Provider.objects.filter(kind=Provider.Kind.OFFLINE).exists()
    _, raw = ServiceKey.issue(name="fuzzer", service="fuzzing")
    return raw


@st.composite
def kind_headers(draw: st.DrawFn, raw_key: str) -> dict[str, str]:
    """The chat fuzz's headers, their operation often one of these endpoints'."""
    sent = draw(headers(raw_key))
    if draw(st.booleans()):
        sent["X-Operation"] = draw(st.sampled_from(OPERATIONS))
    return sent


# Mostly text a request may carry; sometimes empty or with a NUL (refused).
text = mostly(st.text(min_size=1, max_size=60).filter(lambda t: "\x00" not in t), st.text())
token_array = st.lists(st.integers(min_value=-3, max_value=2**31), max_size=5)
embedding_requests = st.fixed_dictionaries(
    {
        "input": mostly(
            text
            | st.lists(text, max_size=4)
            | token_array
            | st.lists(token_array, max_size=3)
            | st.sampled_from([["a"] * 2049, [""], [[]]]),
            json_values,
        )
    },
    optional={
        "model": mostly(
            st.sampled_from(["text-embedding-3-small", "offline/echo", ""]), json_values
        ),
        "dimensions": mostly(st.integers(min_value=1, max_value=64), json_values),
        "encoding_format": mostly(st.sampled_from(["float", "base64"]), json_values),
        "user": mostly(text, json_values),
    },
)
speech_requests = st.fixed_dictionaries(
    {
        "input": mostly(st.one_of(text, text, text, st.just("a" * 4097)), json_values),
        "voice": mostly(st.sampled_from(["alloy", "nova", {"id": "voice_1"}]), json_values),
    },
    optional={
        "model": mostly(st.sampled_from(["tts-1", "offline/echo", ""]), json_values),
        "response_format": mostly(
            st.sampled_from(["mp3", "opus", "aac", "flac", "wav", "pcm"]), json_values
        ),
        "speed": mostly(st.decimals(min_value="0.25", max_value=4, places=2), json_values),
        "instructions": mostly(text, json_values),
        "stream_format": mostly(st.sampled_from(["audio", "audio", "sse"]), json_values),
    },
)
well_formed_embeddings = st.fixed_dictionaries(
    {
        "input": st.text(min_size=1, max_size=60).filter(lambda t: "\x00" not in t)
        | st.lists(st.text(min_size=1, max_size=30).filter(lambda t: "\x00" not in t), min_size=1)
        | st.lists(st.integers(min_value=0, max_value=100_000), min_size=1, max_size=8)
    },
    optional={
        "dimensions": st.integers(min_value=1, max_value=64),
        "encoding_format": st.sampled_from(["float", "base64"]),
    },
)
well_formed_speech = st.fixed_dictionaries(
    {
        "input": st.text(min_size=1, max_size=200).filter(lambda t: "\x00" not in t),
        "voice": st.sampled_from(["alloy", "nova", {"id": "voice_1"}]),
    },
    optional={
        "response_format": st.sampled_from(["mp3", "opus", "aac", "flac", "wav", "pcm"]),
        "speed": st.decimals(min_value="0.25", max_value=4, places=2),
    },
)


def _assert_answered(answer: asgi_driver.Client) -> None:
    """As a chat's answer is checked; audio, which is neither JSON nor events, is
    checked here."""
    if answer.status == 200 and answer.headers["content-type"].startswith("audio/"):
        assert answer.finished, "the audio was never ended"
        assert answer.body
        return
    _assert_well_answered(answer)


embedding_bodies = st.one_of(
    *[embedding_requests.map(_body)] * 3, json_values.map(_body), raw_bodies
)


@given(data=st.data(), body=embedding_bodies, query=query_strings)
def test_embeddings_never_fail_and_leave_the_books_whole(
    raw_key: str, data: st.DataObject, body: bytes, query: bytes
) -> None:
    sent = data.draw(kind_headers(raw_key))
    answer = _send(f"POST {EMBEDDINGS_URL}", "POST", EMBEDDINGS_URL, sent, body, query)
    _assert_answered(answer)
    _assert_books_whole()


speech_bodies = st.one_of(*[speech_requests.map(_body)] * 3, json_values.map(_body), raw_bodies)


@given(data=st.data(), body=speech_bodies, query=query_strings)
def test_speech_never_fails_and_leaves_the_books_whole(
    raw_key: str, data: st.DataObject, body: bytes, query: bytes
) -> None:
    sent = data.draw(kind_headers(raw_key))
    answer = _send(f"POST {SPEECH_URL}", "POST", SPEECH_URL, sent, body, query)
    _assert_answered(answer)
    _assert_books_whole()


@given(
    request=well_formed_embeddings,
    operation=st.sampled_from(OPERATIONS),
    prompt_tokens=st.integers(min_value=-(10**6), max_value=10**40) | st.integers(0, 5000),
    cost=st.none() | st.decimals(min_value=-1, max_value=10**6, places=18),
)
def test_well_formed_embeddings_are_answered_and_recorded_whatever_the_upstream_reports(
    raw_key: str,
    server: OpenAIServer,
    request: dict[str, Any],
    operation: str,
    prompt_tokens: int,
    cost: Any,
) -> None:
    sent = {**asgi_driver.bearer(raw_key), "X-Operation": operation}
    server.reply(Embeddings(prompt_tokens=prompt_tokens, cost=cost))
    endpoint = f"POST {EMBEDDINGS_URL} (well-formed)"
    answer = _send(endpoint, "POST", EMBEDDINGS_URL, sent, _body(request))
    _assert_answered(answer)
    if answer.status >= 400:
        assert answer.error()["code"] in REFUSALS, answer.error()
    else:
        body = loads_exact(answer.body)
        assert len(body["data"]) == (
            len(request["input"])
            if isinstance(request["input"], list) and isinstance(request["input"][0], str)
            else 1
        )
        reported = Decimal(answer.headers["x-cost-usd"])
        assert reported.is_finite()
        assert reported >= 0
    _assert_books_whole()


@given(request=well_formed_speech, operation=st.sampled_from(OPERATIONS))
def test_well_formed_speech_is_answered_with_audio_and_recorded(
    raw_key: str, server: OpenAIServer, request: dict[str, Any], operation: str
) -> None:
    sent = {**asgi_driver.bearer(raw_key), "X-Operation": operation}
    server.reply(Audio())
    endpoint = f"POST {SPEECH_URL} (well-formed)"
    answer = _send(endpoint, "POST", SPEECH_URL, sent, _body(request))
    _assert_answered(answer)
    if answer.status >= 400:
        assert answer.error()["code"] in REFUSALS, answer.error()
    else:
        assert answer.headers["content-type"].startswith("audio/")
    _assert_books_whole()
