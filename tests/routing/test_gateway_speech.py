"""`POST /v1/audio/speech` through the gateway's ASGI application.

Upstream speech models are a real local OpenAI-compatible server (`OpenAIServer`)
streaming audio bytes; the seeded `speech` route answers with the offline model.
Budgets, approvals and kill switches for every kind are in test_gateway_kinds.py; the
`openai` package against a live daphne in test_gateway_openai_client_kinds.py.
"""

from __future__ import annotations

import io
import wave
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from controlplane.money import dumps_exact
from routing.models import AIModel, Budget, BudgetDay, OperationLog, Provider, Reservation
from routing.models.catalog import CallKind
from routing.providers.speech import SAMPLE_RATE
from tests.routing import asgi_driver
from tests.routing.openai_server import Audio, Failure, OpenAIServer
from tests.routing.test_gateway import Committed, error_of, route_to

pytestmark = pytest.mark.django_db

URL = "/v1/audio/speech"
CHARACTER_PRICE = Decimal("0.000015")  # tts-1's, per character
TEXT = "The deploy of billing failed twice; a rollback is running."
AUDIO = b"ID3" + bytes(range(256)) * 40  # 10 KiB: forty chunks of 256 bytes


@pytest.fixture
def raw_key(issued: Any) -> str:
    return str(issued[1])


def speak(client: Client, body: Any, key: str | None, headers: dict[str, str] | None = None) -> Any:
    data = body if isinstance(body, str | bytes) else dumps_exact(body)
    auth = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return client.post(
        URL, data=data, content_type="application/json", headers={**auth, **(headers or {})}
    )


def speech_model(server: OpenAIServer, model_id: str = "openai/tts-1") -> AIModel:
    provider = Provider.objects.create(
        name="upstream", kind=Provider.Kind.COMPATIBLE, base_url=server.url, timeout_seconds=5
    )
    return AIModel.objects.create(
        provider=provider, model_id=model_id, kind=CallKind.SPEECH, price_character=CHARACTER_PRICE
    )


def test_the_offline_model_speaks_silence_as_a_wav_file_and_says_so(
    client: Client, raw_key: str
) -> None:
    response = speak(client, {"model": "tts-1", "input": TEXT, "voice": "alloy"}, raw_key)

    assert response.status_code == 200
    # mp3 is asked by default; the offline model makes WAV and labels it honestly.
    assert response["Content-Type"] == "audio/wav"
    with wave.open(io.BytesIO(response.content)) as audio:
        assert (audio.getnchannels(), audio.getsampwidth()) == (1, 2)
        assert audio.getframerate() == SAMPLE_RATE
        assert audio.getnframes() > 0
        assert set(audio.readframes(audio.getnframes())) == {0}  # silence
    row = OperationLog.objects.get()
    assert (row.operation, row.kind, row.status, row.characters) == (
        "speech",
        "speech",
        "ok",
        len(TEXT),
    )
    assert (row.cost, row.cost_source) == (0, "offline")
    assert response["X-Request-Id"] == row.request_id


def test_the_offline_model_answers_pcm_as_raw_samples(client: Client, raw_key: str) -> None:
    wav = speak(client, {"input": TEXT, "voice": "alloy", "response_format": "wav"}, raw_key)
    pcm = speak(client, {"input": TEXT, "voice": "alloy", "response_format": "pcm"}, raw_key)

    assert (wav["Content-Type"], pcm["Content-Type"]) == ("audio/wav", "audio/pcm")
    with wave.open(io.BytesIO(wav.content)) as audio:
        assert audio.readframes(audio.getnframes()) == pcm.content


def test_a_priced_model_streams_its_audio_and_is_charged_per_character(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    with committed():
        route_to("speech", speech_model(upstream))
    Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal(1))
    upstream.reply(Audio(AUDIO, content_type="audio/mpeg"))
    asked = {
        "model": "tts-1",
        "input": TEXT,
        "voice": {"id": "voice_1234"},
        "speed": 1.5,
        "instructions": "Calmly.",
    }

    response = speak(client, asked, raw_key)

    assert response.status_code == 200
    assert response["Content-Type"] == "audio/mpeg"
    assert response.content == AUDIO
    cost = len(TEXT) * CHARACTER_PRICE
    assert Decimal(response["X-Cost-USD"]) == cost
    sent = upstream.requests[-1]
    assert sent.path == "/v1/audio/speech"
    assert sent.json == {
        "model": "openai/tts-1",
        "input": TEXT,
        "voice": {"id": "voice_1234"},
        "speed": Decimal("1.5"),
        "instructions": "Calmly.",
        "response_format": "mp3",
    }
    row = OperationLog.objects.get()
    assert (row.kind, row.model_used, row.characters, row.cost, row.cost_source) == (
        "speech",
        "openai/tts-1",
        len(TEXT),
        cost,
        "catalog",
    )
    assert row.status == "ok"
    reservation = Reservation.objects.get(request_id=row.request_id)
    assert (reservation.status, reservation.amount) == (Reservation.Status.SETTLED, cost)
    assert BudgetDay.objects.get().spent == cost


def test_audio_cut_off_upstream_ends_the_body_and_is_logged_as_an_error_still_paid(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    with committed():
        route_to("speech", speech_model(upstream))
    upstream.reply(Audio(AUDIO, drop_after=3))

    response = speak(client, {"input": TEXT, "voice": "alloy"}, raw_key)

    assert response.status_code == 200
    assert AUDIO.startswith(response.content)
    assert len(response.content) < len(AUDIO)
    row = OperationLog.objects.get()
    assert row.status == "error"
    assert row.error.startswith("The audio stopped mid-stream:")
    assert row.cost == len(TEXT) * CHARACTER_PRICE  # the audio was made
    reservation = Reservation.objects.get(request_id=row.request_id)
    assert reservation.status == Reservation.Status.SETTLED


def test_audio_the_upstream_sends_whole_is_answered_in_one_piece_and_charged(
    raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    with committed():
        route_to("speech", speech_model(upstream))
    upstream.reply(Audio(AUDIO, whole=True))

    answer = asgi_driver.serve(
        asgi_driver.scope(URL, headers=asgi_driver.bearer(raw_key)),
        asgi_driver.body_of({"input": TEXT, "voice": "alloy"}),
    )

    assert (answer.status, answer.headers["content-type"]) == (200, "audio/mpeg")
    bodies = [m for m in answer.sent if m["type"] == "http.response.body"]
    assert [(m["body"], m.get("more_body", False)) for m in bodies] == [(AUDIO, False)]
    row = OperationLog.objects.get()
    assert (row.status, row.characters, row.cost) == ("ok", len(TEXT), len(TEXT) * CHARACTER_PRICE)
    assert row.request_id == answer.headers["x-request-id"]
    assert Reservation.objects.get().status == Reservation.Status.SETTLED


def test_whole_audio_cut_short_upstream_is_a_failure_before_any_audio_and_falls_back(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    cut = speech_model(upstream)
    offline = AIModel.objects.get(model_id="offline/echo")
    with committed():
        route_to("speech", cut, offline)
    upstream.reply(Audio(AUDIO, whole=True, drop_after=2))

    response = speak(client, {"input": TEXT, "voice": "alloy"}, raw_key)

    assert response.status_code == 200
    assert response["X-Model-Used"] == "offline/echo"
    row = OperationLog.objects.get()
    assert [a["outcome"] for a in row.attempts] == ["error", "ok"]


def test_a_client_that_leaves_mid_stream_closes_the_call_at_once(
    raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    with committed():
        route_to("speech", speech_model(upstream))
    budget = Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal(1))
    # After four chunks the upstream sends nothing more for a minute: a gateway that
    # did not close the call when its client left would still be waiting.
    upstream.reply(Audio(AUDIO, pause_after=4, pause=60))

    answer = asgi_driver.serve(
        asgi_driver.scope(URL, headers=asgi_driver.bearer(raw_key)),
        asgi_driver.body_of({"input": TEXT, "voice": "alloy"}),
        leave_after=2,
    )

    assert answer.status == 200
    assert answer.headers["content-type"] == "audio/mpeg"
    assert 2 <= answer.chunks <= 4
    assert not answer.finished
    row = OperationLog.objects.get()
    assert (row.status, row.error) == ("error", "client disconnected mid-stream")
    assert row.request_id == answer.headers["x-request-id"]
    assert row.cost == len(TEXT) * CHARACTER_PRICE
    reservation = Reservation.objects.get(request_id=row.request_id)
    assert (reservation.status, reservation.actual) == (Reservation.Status.SETTLED, row.cost)
    ledger = BudgetDay.objects.get(budget=budget)
    assert (ledger.reserved, ledger.spent) == (0, row.cost)


def test_a_failing_upstream_falls_back_before_any_audio_is_sent(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    failing = speech_model(upstream)
    offline = AIModel.objects.get(model_id="offline/echo")
    with committed():
        route_to("speech", failing, offline)
    upstream.reply(Failure(503, "overloaded"))

    response = speak(client, {"input": TEXT, "voice": "alloy"}, raw_key)

    assert response.status_code == 200
    assert response["X-Model-Used"] == "offline/echo"
    assert response["Content-Type"] == "audio/wav"
    row = OperationLog.objects.get()
    assert row.fallback_used
    assert [a["outcome"] for a in row.attempts] == ["error", "ok"]


def test_an_upstream_that_answers_no_audio_is_a_502(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    with committed():
        route_to("speech", speech_model(upstream))
    upstream.reply(Failure(400, "voice not found"))

    response = speak(client, {"input": TEXT, "voice": "nobody"}, raw_key)

    assert response.status_code == 502
    assert "voice not found" in error_of(response)["message"]
    row = OperationLog.objects.get()
    assert (row.status, row.cost) == ("error", 0)
    assert Reservation.objects.get().status == Reservation.Status.RELEASED


def test_a_model_without_a_character_price_is_not_routed_to(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    unpriced = speech_model(upstream)
    unpriced.price_character = None
    unpriced.save()
    with committed():
        route_to("speech", unpriced)

    response = speak(client, {"input": TEXT, "voice": "alloy"}, raw_key)

    assert response.status_code == 404
    error = error_of(response)
    assert error["code"] == "not_routable"
    assert "openai/tts-1: price missing: no character price" in error["message"]
    assert upstream.requests == []
    assert not Reservation.objects.exists()


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"voice": "alloy"}, "input", "Invalid 'input'"),
        ({"input": "", "voice": "alloy"}, "input", "Invalid 'input'"),
        ({"input": "a" * 4097, "voice": "alloy"}, "input", "Invalid 'input'"),
        ({"input": 3, "voice": "alloy"}, "input", "Invalid 'input'"),
        ({"input": "hi"}, "voice", "Invalid 'voice'"),
        ({"input": "hi", "voice": ""}, "voice", "Invalid 'voice'"),
        ({"input": "hi", "voice": {"name": "x"}}, "voice.id", "Invalid 'voice.id'"),
        ({"input": "hi", "voice": "alloy", "response_format": "ogg"}, "response_format", ""),
        ({"input": "hi", "voice": "alloy", "speed": 0.1}, "speed", "Invalid 'speed'"),
        ({"input": "hi", "voice": "alloy", "speed": 4.5}, "speed", "Invalid 'speed'"),
        ({"input": "hi", "voice": "alloy", "speed": "fast"}, "speed", "Invalid 'speed'"),
        ({"input": "hi", "voice": "alloy", "instructions": 1}, "instructions", "Invalid"),
        ({"input": "hi", "voice": "alloy", "stream_format": "sse"}, "stream_format", "'stream"),
        ({"input": "hi", "voice": "alloy", "model": ["tts"]}, "model", "Invalid 'model'"),
        ({"input": "a\x00b", "voice": "alloy"}, "input", "'input' contains a NUL character"),
        (b"[]", None, "The body must be a JSON object"),
        (b'{"input": "hi", "voice": "alloy", "speed": Infinity}', None, "The body is not"),
    ],
)
def test_bad_input_gets_400_naming_the_field_before_anything_is_reserved(
    client: Client, raw_key: str, body: Any, param: str | None, message: str
) -> None:
    Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal(10))

    response = speak(client, body, raw_key)

    assert response.status_code == 400
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"].startswith(message), error["message"]
    assert not OperationLog.objects.exists()
    assert not Reservation.objects.exists()
    assert not BudgetDay.objects.exists()
