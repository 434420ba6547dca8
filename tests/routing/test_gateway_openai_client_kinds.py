"""The official `openai` package's embeddings and speech through the gateway, served by
daphne (`live_server_url`): as its users call them, with its defaults (base64
embeddings, audio streamed to a file). The cost in the log is checked against the
catalog's unit prices of a priced model behind a local upstream.

Like test_gateway_openai_client.py, these tests are transactional.
"""

from __future__ import annotations

import threading
import wave
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI

from controlplane.approvals import decide_approval
from controlplane.models import Approval
from routing.models import AIModel, Budget, Provider, Route
from routing.models.catalog import CallKind
from routing.providers.embeddings import OFFLINE_DIMENSIONS
from tests.routing.openai_server import Audio, Embeddings, OpenAIServer
from tests.routing.test_gateway_openai_client import (  # noqa: F401  (fixtures)
    ANSWERED,
    _seeded,
    gateway,
    logged_call,
    raw_key,
)

pytestmark = pytest.mark.django_db(transaction=True)

TEXT = "Billing is back: the rollback finished at noon."
AUDIO = b"ID3" + bytes(range(256)) * 40


def route_to_upstream(server: OpenAIServer, operation: str, **model: Any) -> AIModel:
    provider = Provider.objects.create(
        name="upstream", kind=Provider.Kind.COMPATIBLE, base_url=server.url, timeout_seconds=10
    )
    priced = AIModel.objects.create(provider=provider, **model)
    route = Route.objects.get(operation=operation)
    route.primary_model = priced
    route.save()
    return priced


def test_embeddings_with_the_packages_default_encoding_are_the_offline_vectors(
    gateway: OpenAI,  # noqa: F811
) -> None:
    default = gateway.embeddings.create(model="offline/echo", input=["a cat", "a dog"])
    as_floats = gateway.embeddings.create(
        model="offline/echo", input=["a cat", "a dog"], encoding_format="float"
    )

    assert len(default.data) == 2
    assert len(default.data[0].embedding) == OFFLINE_DIMENSIONS
    assert [d.embedding for d in default.data] == [d.embedding for d in as_floats.data]
    assert default.data[0].embedding != default.data[1].embedding
    assert default.usage.prompt_tokens > 0
    row = logged_call(ANSWERED[0])
    assert (row.operation, row.kind, row.status, row.service) == (
        "embeddings",
        "embedding",
        "ok",
        "billing",
    )


def test_embeddings_from_a_priced_model_cost_its_tokens_at_the_catalogs_prompt_price(
    gateway: OpenAI,  # noqa: F811
    upstream: OpenAIServer,
) -> None:
    route_to_upstream(
        upstream,
        "embeddings",
        model_id="openai/text-embedding-3-small",
        kind=CallKind.EMBEDDING,
        price_prompt=Decimal("0.00000002"),
    )
    upstream.reply(Embeddings(dimensions=3, prompt_tokens=11))

    answer = gateway.embeddings.create(
        model="text-embedding-3-small", input="the deploy failed", dimensions=3
    )

    assert answer.data[0].embedding == pytest.approx([0, 0.1, 0.2])
    assert upstream.requests[0].json["encoding_format"] == "base64"
    assert upstream.requests[0].json["dimensions"] == 3
    row = logged_call()
    price = AIModel.objects.get(model_id="openai/text-embedding-3-small").price_prompt
    assert price is not None
    assert (row.prompt_tokens, row.cost, row.cost_source) == (11, 11 * price, "catalog")


def test_speech_streamed_to_a_file_is_the_offline_models_wav(
    gateway: OpenAI,  # noqa: F811
    tmp_path: Path,
) -> None:
    path = tmp_path / "speech.wav"

    with gateway.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=TEXT, response_format="wav"
    ) as response:
        assert response.headers["content-type"] == "audio/wav"
        response.stream_to_file(path)

    with wave.open(str(path)) as audio:
        assert audio.getnframes() > 0
    row = logged_call()
    assert (row.operation, row.kind, row.characters, row.cost) == (
        "speech",
        "speech",
        len(TEXT),
        0,
    )


def test_speech_from_a_priced_model_costs_its_characters_at_the_catalogs_price(
    gateway: OpenAI,  # noqa: F811
    upstream: OpenAIServer,
    tmp_path: Path,
) -> None:
    route_to_upstream(
        upstream,
        "speech",
        model_id="openai/tts-1",
        kind=CallKind.SPEECH,
        price_character=Decimal("0.000015"),
    )
    upstream.reply(Audio(AUDIO))
    path = tmp_path / "speech.mp3"

    with gateway.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=TEXT
    ) as response:
        assert response.headers["content-type"] == "audio/mpeg"
        response.stream_to_file(path)

    assert path.read_bytes() == AUDIO
    assert upstream.requests[0].json["response_format"] == "mp3"
    row = logged_call()
    price = AIModel.objects.get(model_id="openai/tts-1").price_character
    assert price is not None
    assert (row.characters, row.cost, row.cost_source, row.status) == (
        len(TEXT),
        len(TEXT) * price,
        "catalog",
        "ok",
    )


def test_speech_reaches_the_client_while_the_upstream_still_sends_it(
    gateway: OpenAI,  # noqa: F811
    upstream: OpenAIServer,
    tmp_path: Path,
) -> None:
    route_to_upstream(
        upstream,
        "speech",
        model_id="openai/tts-1",
        kind=CallKind.SPEECH,
        price_character=Decimal("0.000015"),
    )
    # The upstream sends four chunks, then waits for the test: the first bytes can only
    # be read now if the gateway streams them on as they come.
    release = threading.Event()
    upstream.reply(Audio(AUDIO, pause_after=4, release=release))

    with gateway.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=TEXT
    ) as response:
        pieces = response.iter_bytes(256)
        first = next(pieces)
        assert not upstream.pending  # taken, and paused
        release.set()
        rest = b"".join(pieces)

    assert first + rest == AUDIO
    assert logged_call().status == "ok"


def test_a_budget_refusal_and_an_approval_reach_the_package_as_its_errors(
    gateway: OpenAI,  # noqa: F811
    owner: Any,
    upstream: OpenAIServer,
    live_server_url: str,
) -> None:
    route_to_upstream(
        upstream,
        "embeddings",
        model_id="openai/text-embedding-3-small",
        kind=CallKind.EMBEDDING,
        price_prompt=Decimal("0.00000002"),
    )
    Route.objects.filter(operation="speech").update(spends_money=True)
    budget = Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal(0))

    with pytest.raises(openai.RateLimitError) as over:
        gateway.embeddings.create(model="text-embedding-3-small", input="hello")
    with pytest.raises(openai.PermissionDeniedError) as asked:
        gateway.audio.speech.create(model="tts-1", voice="alloy", input=TEXT)

    assert over.value.code == "budget_exceeded"
    assert upstream.requests == []
    body: Any = asked.value.body
    assert asked.value.code == "approval_required"
    budget.daily_limit = Decimal(100)
    budget.save()
    decide_approval(Approval.objects.get(pk=body["approval_id"]), user=owner, approve=True)

    spoken = gateway.audio.speech.create(
        model="tts-1",
        voice="alloy",
        input=TEXT,
        extra_headers={"X-Approval-Id": str(body["approval_id"])},
    )

    assert spoken.content.startswith(b"RIFF")  # the offline model's WAV
