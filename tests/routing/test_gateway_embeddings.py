"""`POST /v1/embeddings` through the gateway's ASGI application (Django's test client).

Upstream embedding models are a real local OpenAI-compatible server (`OpenAIServer`);
the seeded `embeddings` route answers with the offline model. Budgets, approvals and
kill switches for every kind are in test_gateway_kinds.py; the `openai` package
against a live daphne in test_gateway_openai_client_kinds.py.
"""

from __future__ import annotations

import base64
import math
import struct
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from controlplane.money import dumps_exact, loads_exact
from routing.models import AIModel, Budget, BudgetDay, OperationLog, Provider, Reservation, Route
from routing.models.catalog import CallKind
from routing.providers.embeddings import OFFLINE_DIMENSIONS
from tests.routing.openai_server import Embeddings, Failure, OpenAIServer
from tests.routing.test_gateway import Committed, error_of, route_to

pytestmark = pytest.mark.django_db

URL = "/v1/embeddings"
EMBEDDING_PRICE = Decimal("0.00000002")  # text-embedding-3-small's, per token


@pytest.fixture
def raw_key(issued: Any) -> str:
    return str(issued[1])


def embed(client: Client, body: Any, key: str | None, headers: dict[str, str] | None = None) -> Any:
    data = body if isinstance(body, str | bytes) else dumps_exact(body)
    auth = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return client.post(
        URL, data=data, content_type="application/json", headers={**auth, **(headers or {})}
    )


def embedding_model(server: OpenAIServer, model_id: str = "openai/text-embedding-3-small") -> Any:
    provider = Provider.objects.create(
        name="upstream", kind=Provider.Kind.COMPATIBLE, base_url=server.url, timeout_seconds=5
    )
    return AIModel.objects.create(
        provider=provider,
        model_id=model_id,
        kind=CallKind.EMBEDDING,
        context_length=8192,
        price_prompt=EMBEDDING_PRICE,
    )


def body_of(response: Any) -> Any:
    assert response.status_code == 200, response.content
    return loads_exact(response.content)


def floats(embedding: Any) -> list[float]:
    """A vector as the client reads it: a list, or little-endian float32 in base64."""
    if isinstance(embedding, str):
        packed = base64.b64decode(embedding)
        return list(struct.unpack(f"<{len(packed) // 4}f", packed))
    return [float(n) for n in embedding]


def test_the_offline_model_embeds_each_input_deterministically_with_no_network(
    client: Client, raw_key: str
) -> None:
    asked = {"model": "offline/echo", "input": ["a cat", "a dog", "a cat"]}

    response = embed(client, asked, raw_key)

    assert response.status_code == 200
    body = loads_exact(response.content)
    assert body["object"] == "list"
    assert [item["index"] for item in body["data"]] == [0, 1, 2]
    cat, dog, cat_again = (floats(item["embedding"]) for item in body["data"])
    assert len(cat) == OFFLINE_DIMENSIONS
    assert cat == cat_again
    assert cat != dog
    assert math.isclose(math.sqrt(sum(n * n for n in cat)), 1.0, rel_tol=1e-5)
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0
    row = OperationLog.objects.get()
    assert (row.operation, row.kind, row.status, row.service) == (
        "embeddings",
        "embedding",
        "ok",
        "billing",
    )
    assert (row.cost, row.cost_source) == (0, "offline")
    assert row.prompt_tokens == body["usage"]["prompt_tokens"]
    assert response["X-Request-Id"] == row.request_id


def test_dimensions_are_honoured_and_base64_is_the_same_vector_as_float32(
    client: Client, raw_key: str
) -> None:
    asked = {"input": "the deploy failed", "dimensions": 8}

    as_floats = loads_exact(embed(client, {**asked, "encoding_format": "float"}, raw_key).content)
    as_base64 = loads_exact(embed(client, {**asked, "encoding_format": "base64"}, raw_key).content)

    vector = floats(as_floats["data"][0]["embedding"])
    assert isinstance(as_base64["data"][0]["embedding"], str)
    assert floats(as_base64["data"][0]["embedding"]) == vector
    assert len(vector) == 8


def test_a_token_array_input_is_embedded_and_counted_as_its_tokens(
    client: Client, raw_key: str
) -> None:
    response = embed(client, {"input": [[1, 2, 3], [4, 5]]}, raw_key)

    assert response.status_code == 200
    body = loads_exact(response.content)
    assert len(body["data"]) == 2
    assert body["usage"]["prompt_tokens"] == 5


def test_a_priced_model_is_charged_its_reported_tokens_at_its_prompt_price(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    model = embedding_model(upstream)
    with committed():
        route_to("embeddings", model)
    Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal(1))
    upstream.reply(Embeddings(dimensions=3, prompt_tokens=7))

    response = embed(
        client,
        {"model": "text-embedding-3-small", "input": ["first", "second"], "user": "u-1"},
        raw_key,
    )

    assert response.status_code == 200
    body = loads_exact(response.content)
    assert [floats(item["embedding"]) for item in body["data"]] == [
        pytest.approx([0, 0.1, 0.2]),
        pytest.approx([1, 1.1, 1.2]),
    ]
    cost = 7 * EMBEDDING_PRICE
    assert Decimal(response["X-Cost-USD"]) == cost
    assert body["usage"]["cost"] == cost
    sent = upstream.requests[-1]
    assert sent.path == "/v1/embeddings"
    assert sent.json == {
        "model": "openai/text-embedding-3-small",
        "input": ["first", "second"],
        "user": "u-1",
        "encoding_format": "float",
    }
    row = OperationLog.objects.get()
    assert (row.kind, row.model_used, row.prompt_tokens, row.cost, row.cost_source) == (
        "embedding",
        "openai/text-embedding-3-small",
        7,
        cost,
        "catalog",
    )
    assert row.model_requested == "openai/text-embedding-3-small"
    reservation = Reservation.objects.get(request_id=row.request_id)
    assert reservation.status == Reservation.Status.SETTLED
    # Reserved at the estimate: four characters a token, "first" and "second" two each.
    assert reservation.amount == 4 * EMBEDDING_PRICE
    assert BudgetDay.objects.get().spent == cost


def test_an_upstream_that_ignores_the_encoding_asked_is_converted(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    with committed():
        route_to("embeddings", embedding_model(upstream))
    upstream.reply(Embeddings(dimensions=2, encoding="float"))
    upstream.reply(Embeddings(dimensions=2, encoding="base64"))

    as_base64 = body_of(embed(client, {"input": "x", "encoding_format": "base64"}, raw_key))
    as_floats = body_of(embed(client, {"input": "x", "encoding_format": "float"}, raw_key))

    encoded = as_base64["data"][0]["embedding"]
    assert isinstance(encoded, str)
    assert floats(encoded) == pytest.approx([0, 0.1])
    assert floats(as_floats["data"][0]["embedding"]) == pytest.approx([0, 0.1])


def test_a_vector_is_handed_on_with_every_number_as_the_upstream_wrote_it(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    with committed():
        route_to("embeddings", embedding_model(upstream))
    digits = Decimal("0.12345678901234567890123")  # more than a float holds
    upstream.reply(Embeddings(vector=(digits, Decimal("-0.0000001"), 0), cost="0.0000021"))

    response = embed(client, {"input": "x", "encoding_format": "float"}, raw_key)

    assert response.status_code == 200
    assert b'"embedding":[0.12345678901234567890123,-0.0000001,0]' in response.content
    assert body_of(response)["usage"]["cost"] == Decimal("0.0000021")


@pytest.mark.parametrize("vector", [("0.5", Decimal(1)), (True, Decimal(1)), (None,), ([1],)])
def test_a_vector_holding_anything_but_numbers_is_unreadable_and_the_next_model_answers(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed, vector: Any
) -> None:
    broken = embedding_model(upstream)
    offline = AIModel.objects.get(model_id="offline/echo")
    with committed():
        route_to("embeddings", broken, offline)
    upstream.reply(Embeddings(vector=vector), model=broken.model_id)

    response = embed(client, {"input": "hello", "encoding_format": "float"}, raw_key)

    assert response.status_code == 200
    assert response["X-Model-Used"] == "offline/echo"
    row = OperationLog.objects.get()
    assert [a["outcome"] for a in row.attempts] == ["error", "ok"]
    assert "an embedding in the answer is unreadable" in row.attempts[0]["error"]


def test_usage_the_upstream_leaves_out_is_charged_at_the_estimate(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    with committed():
        route_to("embeddings", embedding_model(upstream))
    upstream.reply(Embeddings(report_usage=False))

    response = embed(client, {"input": "x" * 40}, raw_key)

    assert response.status_code == 200
    row = OperationLog.objects.get()
    assert row.prompt_tokens == 10
    assert row.cost == 10 * EMBEDDING_PRICE


def test_a_batch_longer_than_the_models_context_is_routed_since_each_input_fits(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    model = embedding_model(upstream)
    model.context_length = 10
    model.save()
    with committed():
        route_to("embeddings", model)
    upstream.reply(Embeddings(prompt_tokens=30))

    response = embed(client, {"input": ["x" * 40, "y" * 40, "z" * 40]}, raw_key)

    assert response.status_code == 200
    row = OperationLog.objects.get()
    assert (row.prompt_tokens, row.usage_flag) == (30, "")


def test_a_chat_model_does_not_serve_embeddings(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    provider = Provider.objects.create(name="upstream", base_url=upstream.url)
    chat_model = AIModel.objects.create(
        provider=provider,
        model_id="acme/chat",
        price_prompt=Decimal("0.000001"),
        price_completion=Decimal("0.000002"),
    )
    with committed():
        route_to("embeddings", chat_model)

    response = embed(client, {"input": "hello"}, raw_key)

    assert response.status_code == 404
    error = error_of(response)
    assert error["code"] == "not_routable"
    assert "a chat model, not for embedding calls" in error["message"]
    assert upstream.requests == []


def test_x_operation_routes_embeddings_of_another_operation(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    with committed():
        Route.objects.create(operation="search-index", primary_model=embedding_model(upstream))

    response = embed(client, {"input": "hello"}, raw_key, {"X-Operation": "search-index"})

    assert response.status_code == 200
    assert OperationLog.objects.get().operation == "search-index"
    assert len(upstream.requests) == 1


def test_a_failing_upstream_answers_502_and_spends_nothing(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    with committed():
        route_to("embeddings", embedding_model(upstream))
    Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal(1))
    upstream.reply(Failure(500, "the embedder is down"))

    response = embed(client, {"input": "hello"}, raw_key)

    assert response.status_code == 502
    assert "the embedder is down" in error_of(response)["message"]
    row = OperationLog.objects.get()
    assert (row.status, row.cost, row.kind) == ("error", 0, "embedding")
    assert Reservation.objects.get().status == Reservation.Status.RELEASED
    assert BudgetDay.objects.get().spent == 0


def test_an_unreadable_embedding_from_upstream_falls_back_to_the_next_model(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    broken = embedding_model(upstream)
    offline = AIModel.objects.get(model_id="offline/echo")
    with committed():
        route_to("embeddings", broken, offline)
    upstream.reply(Failure(200, "ok"), model=broken.model_id)  # an error object in a 200

    response = embed(client, {"input": "hello"}, raw_key)

    assert response.status_code == 200
    assert response["X-Model-Used"] == "offline/echo"
    row = OperationLog.objects.get()
    assert row.fallback_used
    assert [a["outcome"] for a in row.attempts] == ["error", "ok"]


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({}, "input", "'input' is required"),
        ({"input": ""}, "input", "'input' is an empty string"),
        ({"input": ["fine", ""]}, "input[1]", "'input[1]' is an empty string"),
        ({"input": []}, "input", "'input' is an empty list"),
        ({"input": [[]]}, "input[0]", "'input[0]' is an empty token array"),
        ({"input": [1, -2]}, "input[1]", "'input[1]' must be a token id"),
        ({"input": [True]}, "input[0]", "'input[0]' must be a string or a token array"),
        ({"input": ["a", 3]}, "input[1]", "'input[1]' must be a string or a token array"),
        ({"input": {"text": "a"}}, "input", "'input' must be a string, a list"),
        ({"input": ["a"] * 2049}, "input", "'input' has 2,049 items; at most 2,048"),
        ({"input": ["a"] * 100_000}, "input", "'input' has 100,000 items"),
        ({"input": "a", "dimensions": 0}, "dimensions", "Invalid 'dimensions'"),
        ({"input": "a", "dimensions": 10**6}, "dimensions", "Invalid 'dimensions'"),
        ({"input": "a", "dimensions": "8"}, "dimensions", "Invalid 'dimensions'"),
        ({"input": "a", "encoding_format": "int8"}, "encoding_format", "Invalid"),
        ({"input": "a", "model": 3}, "model", "Invalid 'model'"),
        ({"input": "a", "user": ["u"]}, "user", "Invalid 'user'"),
        ({"input": "a\x00b"}, "input", "'input' contains a NUL character"),
        (b"[1, 2]", None, "The body must be a JSON object"),
        (b'{"input": NaN}', None, "The body is not valid JSON"),
    ],
)
def test_bad_input_gets_400_naming_the_field_before_anything_is_reserved(
    client: Client, raw_key: str, body: Any, param: str | None, message: str
) -> None:
    Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal(10))

    response = embed(client, body, raw_key)

    assert response.status_code == 400
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"].startswith(message), error["message"]
    assert not OperationLog.objects.exists()
    assert not Reservation.objects.exists()
    assert not BudgetDay.objects.exists()


def test_a_request_without_a_key_gets_401_before_its_body_is_read(client: Client) -> None:
    response = embed(client, b"not json", key=None)

    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_api_key"
