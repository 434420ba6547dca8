"""`POST /v1/audio/transcriptions` through Django's test client (the gateway's ASGI
application): each response format, bad input refused before anything is reserved,
kill switches, approvals and budgets, a priced upstream (a real local
OpenAI-compatible server) and Deepgram (a real local fake of its API) with fallbacks.
The official `openai` package against a live daphne is in
test_gateway_transcriptions_openai_client.py.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from decimal import Decimal
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, override_settings

from controlplane.approvals import decide_approval
from controlplane.models import Approval, FeatureToggle
from controlplane.money import loads_exact
from routing.models import (
    AIModel,
    Budget,
    BudgetDay,
    OperationLog,
    Provider,
    Reservation,
    Route,
    RouteFallback,
    ServiceKey,
)
from routing.models.catalog import CallKind
from tests.routing.audio_files import wav
from tests.routing.deepgram_server import DeepgramServer, Heard, Refused
from tests.routing.openai_server import Failure, OpenAIServer, Transcribed

pytestmark = pytest.mark.django_db

URL = "/v1/audio/transcriptions"
AUDIO_PRICE = Decimal("0.0001")  # USD per second of audio
TWO_SECONDS = wav("2.5")

Committed = Callable[[], AbstractContextManager[Any]]


@pytest.fixture
def raw_key() -> str:
    return ServiceKey.issue(name="notes", service="meetings", default_operation="transcribe")[1]


@pytest.fixture
def deepgram() -> Any:
    with DeepgramServer() as server:
        yield server


def transcribe(
    client: Client,
    key: str | None,
    *,
    audio: bytes | None = TWO_SECONDS,
    filename: str = "meeting.wav",
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> Any:
    data: dict[str, Any] = {"model": "whisper-1", **fields}
    if audio is not None:
        data["file"] = SimpleUploadedFile(filename, audio, content_type="audio/wav")
    data = {name: value for name, value in data.items() if value is not None}
    auth = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return client.post(URL, data=data, headers={**auth, **(headers or {})})


def error_of(response: Any) -> dict[str, Any]:
    assert response["Content-Type"] == "application/json"
    return loads_exact(response.content)["error"]


def priced_models(provider: Provider, *model_ids: str) -> list[AIModel]:
    return [
        AIModel.objects.create(
            provider=provider,
            model_id=model_id,
            kind=CallKind.TRANSCRIPTION,
            price_audio_second=AUDIO_PRICE,
        )
        for model_id in model_ids
    ]


def route_to(primary: AIModel, *fallbacks: AIModel, **rules: Any) -> Route:
    route = Route.objects.get(operation="transcribe")
    route.primary_model = primary
    for name, value in rules.items():
        setattr(route, name, value)
    route.save()
    for position, model in enumerate(fallbacks):
        RouteFallback.objects.create(route=route, model=model, position=position)
    return route


def nothing_reserved() -> bool:
    return (
        not Reservation.objects.exists()
        and not OperationLog.objects.exclude(status="refused").exists()
    )


# -- the offline model, in every format -------------------------------------------------


def test_the_offline_model_transcribes_from_the_files_name_and_length(
    client: Client, raw_key: str
) -> None:
    response = transcribe(client, raw_key, audio=wav("3.2"))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = loads_exact(response.content)
    assert body["text"].startswith("Transcript of meeting.wav, 3.2 seconds of audio.")
    assert body["usage"] == {"type": "duration", "seconds": 4}
    assert response["X-Model-Used"] == "offline/echo"
    row = OperationLog.objects.get()
    assert (row.kind, row.operation, row.service, row.status) == (
        "transcription",
        "transcribe",
        "meetings",
        "ok",
    )
    assert (row.audio_seconds, row.cost, row.model_requested) == (Decimal("3.2"), 0, "offline/echo")


def test_text_is_answered_as_plain_text(client: Client, raw_key: str) -> None:
    response = transcribe(client, raw_key, response_format="text")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    text = response.content.decode()
    assert text.startswith("Transcript of meeting.wav, 2.5 seconds of audio.")
    assert text.endswith(".\n")


def test_srt_and_vtt_are_built_from_the_segments(client: Client, raw_key: str) -> None:
    srt = transcribe(client, raw_key, response_format="srt").content.decode()
    vtt = transcribe(client, raw_key, response_format="vtt").content.decode()

    cues = srt.strip().split("\n\n")
    assert len(cues) == 2
    first = cues[0].split("\n")
    assert first[0] == "1"
    assert first[1].startswith("00:00:00,000 --> 00:00:0")
    assert first[2] == "Transcript of meeting.wav, 2.5 seconds of audio."
    assert cues[1].split("\n")[1].endswith("--> 00:00:02,500")
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:0")
    assert vtt.rstrip().endswith("for real transcripts.")
    assert "--> 00:00:02.500\n" in vtt


def test_verbose_json_has_language_duration_segments_and_words_when_asked(
    client: Client, raw_key: str
) -> None:
    plain = loads_exact(
        transcribe(client, raw_key, response_format="verbose_json", language="fr").content
    )
    with_words = loads_exact(
        transcribe(
            client,
            raw_key,
            response_format="verbose_json",
            **{"timestamp_granularities[]": ["word", "segment"]},
        ).content
    )

    assert (plain["task"], plain["language"], plain["duration"]) == (
        "transcribe",
        "fr",
        Decimal("2.5"),
    )
    assert [s["id"] for s in plain["segments"]] == [0, 1]
    assert plain["segments"][-1]["end"] == Decimal("2.5")
    assert "words" not in plain
    words = with_words["words"]
    assert words[0] == {"word": "Transcript", "start": 0, "end": words[1]["start"]}
    assert " ".join(w["word"] for w in words) == with_words["text"]
    assert len(with_words["segments"]) == 2


# -- bad input: a 4xx naming the field, nothing reserved --------------------------------


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"audio": b"Not audio at all, just text."}, "file"),
        ({"audio": None}, "file"),
        ({"model": None}, "model"),
        ({"model": "  "}, "model"),
        ({"response_format": "xml"}, "response_format"),
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": "1.5"}, "temperature"),
        ({"timestamp_granularities[]": "word"}, "timestamp_granularities[]"),
        (
            {"response_format": "verbose_json", "timestamp_granularities[]": "letter"},
            "timestamp_granularities[]",
        ),
        ({"stream": "true"}, "stream"),
        ({"prompt": "a\x00b"}, "prompt"),
        ({"model": "m" * 201}, "model"),
    ],
)
def test_bad_input_gets_400_naming_the_field_and_reserves_nothing(
    client: Client, raw_key: str, fields: dict[str, Any], param: str
) -> None:
    response = transcribe(client, raw_key, **fields)

    assert response.status_code == 400
    error = error_of(response)
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert param.rstrip("[]") in error["message"]
    assert nothing_reserved()
    assert not OperationLog.objects.exists()


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b'{"model": "whisper-1"}'),
        ("multipart/form-data", b"--x\r\n"),
        ("multipart/form-data; boundary=x", b"garbage"),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n',
        ),
    ],
)
def test_a_body_that_is_no_multipart_upload_gets_400_naming_file(
    client: Client, raw_key: str, content_type: str, body: bytes
) -> None:
    response = client.post(
        URL, data=body, content_type=content_type, headers={"Authorization": f"Bearer {raw_key}"}
    )

    assert response.status_code == 400
    assert error_of(response)["param"] == "file"
    assert not OperationLog.objects.exists()


def test_an_upload_over_the_limit_gets_413_naming_the_limit(client: Client, raw_key: str) -> None:
    with override_settings(GATEWAY_TRANSCRIPTION_MAX_BYTES=10_000):
        over = transcribe(client, raw_key, audio=wav(1))  # 16 KB of audio
        under = transcribe(client, raw_key, audio=wav("0.5"))

    assert over.status_code == 413
    error = error_of(over)
    assert (error["code"], error["param"]) == ("request_too_large", "file")
    assert "10,000 bytes" in error["message"]
    assert "GATEWAY_TRANSCRIPTION_MAX_BYTES" in error["message"]
    assert under.status_code == 200
    assert OperationLog.objects.count() == 1


def test_the_default_limit_is_openais_25_mb_not_the_forms_limit(
    client: Client, raw_key: str
) -> None:
    # Five minutes of 8 kHz audio: 4.8 MB, past DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB).
    response = transcribe(client, raw_key, audio=wav(300))

    assert response.status_code == 200
    assert OperationLog.objects.get().audio_seconds == 300


def test_a_missing_key_gets_401_before_the_upload_is_looked_at(client: Client) -> None:
    response = transcribe(client, None, audio=b"not audio")

    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_api_key"


# -- the call path: switches, approvals, budgets -----------------------------------------


def test_kill_switches_answer_503_and_nothing_is_spent(
    client: Client, raw_key: str, committed: Committed
) -> None:
    for toggle in ("gateway.enabled", "operation.transcribe.enabled"):
        with committed():
            FeatureToggle.objects.update_or_create(key=toggle, defaults={"enabled": False})

        response = transcribe(client, raw_key)

        assert response.status_code == 503
        error = error_of(response)
        assert error["code"] == "feature_off"
        assert toggle in error["message"]
        with committed():
            FeatureToggle.objects.filter(key=toggle).update(enabled=True)
            FeatureToggle.objects.get(key=toggle).save()  # drops the cached value
    assert [row.status for row in OperationLog.objects.all()] == ["refused", "refused"]
    assert transcribe(client, raw_key).status_code == 200


def test_a_used_up_budget_refuses_a_transcription_with_429(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    upstream_provider = Provider.objects.create(
        name="upstream", kind=Provider.Kind.COMPATIBLE, base_url=upstream.url
    )
    (model,) = priced_models(upstream_provider, "acme/whisper")
    with committed():
        route_to(model)
    Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal(0))

    response = transcribe(client, raw_key)

    assert response.status_code == 429
    error = error_of(response)
    assert (error["code"], error["budget"]) == ("budget_exceeded", "global budget")
    assert response["Retry-After"] == str(error["retry_after"])
    assert upstream.requests == []
    assert not Reservation.objects.exists()
    row = OperationLog.objects.get()
    assert (row.status, row.kind, row.cost) == ("refused", "transcription", 0)


def test_a_transcription_that_spends_money_waits_for_approval_then_goes_through(
    client: Client, raw_key: str, owner: Any, committed: Committed
) -> None:
    with committed():
        route_to(AIModel.objects.get(model_id="offline/echo"), spends_money=True)

    asked = transcribe(client, raw_key)

    assert asked.status_code == 403
    error = error_of(asked)
    assert (error["code"], error["rule"]) == ("approval_required", "spends_money")
    approval = Approval.objects.get(pk=error["approval_id"])
    assert approval.proposal["operation"] == "transcribe"
    with committed():
        decide_approval(approval, user=owner, approve=True)

    through = transcribe(client, raw_key, headers={"X-Approval-Id": str(approval.pk)})

    assert through.status_code == 200
    assert loads_exact(through.content)["text"].startswith("Transcript of meeting.wav")
    assert OperationLog.objects.get(status="ok").kind == "transcription"


def test_an_operation_routed_only_to_chat_models_cannot_transcribe(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    provider = Provider.objects.create(
        name="upstream", kind=Provider.Kind.COMPATIBLE, base_url=upstream.url
    )
    chat_model = AIModel.objects.create(
        provider=provider,
        model_id="acme/chat",
        price_prompt=Decimal("0.000001"),
        price_completion=Decimal("0.000002"),
    )
    with committed():
        route_to(chat_model)

    response = transcribe(client, raw_key)

    assert response.status_code < 500
    assert response.status_code >= 400
    assert "a chat model, not for transcription calls" in error_of(response)["message"]
    assert upstream.requests == []
    assert not Reservation.objects.exists()


# -- a priced upstream: reserved at the header's length, settled at the reported one ----


def test_an_openai_compatible_upstream_gets_the_upload_and_its_answer_passes_through(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    provider = Provider.objects.create(
        name="upstream",
        kind=Provider.Kind.COMPATIBLE,
        base_url=upstream.url,
        api_key="sk-upstream",
    )
    (model,) = priced_models(provider, "acme/whisper")
    with committed():
        route_to(model)
    budget = Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal(10))
    upstream.reply(Transcribed("Hello from upstream.", duration="2.4"))

    response = transcribe(
        client,
        raw_key,
        response_format="verbose_json",
        language="en",
        prompt="Names: Ada.",
        temperature="0.2",
        **{"timestamp_granularities[]": ["word", "segment"]},
    )

    assert response.status_code == 200
    body = loads_exact(response.content)
    assert (body["text"], body["duration"]) == ("Hello from upstream.", Decimal("2.4"))
    sent = upstream.requests[0]
    assert sent.path == "/v1/audio/transcriptions"
    assert sent.headers["authorization"] == "Bearer sk-upstream"
    assert sent.form is not None
    assert sent.form["file"] == ("meeting.wav", "audio/wav", TWO_SECONDS)
    assert (sent.form["model"], sent.form["response_format"]) == ("acme/whisper", "verbose_json")
    assert (sent.form["language"], sent.form["prompt"], sent.form["temperature"]) == (
        "en",
        "Names: Ada.",
        "0.2",
    )
    assert sent.form["timestamp_granularities[]"] == ["word", "segment"]
    row = OperationLog.objects.get()
    assert (row.audio_seconds, row.cost, row.cost_source) == (
        Decimal("2.4"),
        Decimal("2.4") * AUDIO_PRICE,
        "catalog",
    )
    assert Decimal(response["X-Cost-USD"]) == row.cost
    ledger = BudgetDay.objects.get(budget=budget)
    assert (ledger.spent, ledger.reserved) == (row.cost, 0)
    assert Reservation.objects.get().amount == Decimal("2.5") * AUDIO_PRICE


def test_an_upstream_that_reports_no_length_is_priced_at_the_headers(
    client: Client, raw_key: str, upstream: OpenAIServer, committed: Committed
) -> None:
    provider = Provider.objects.create(
        name="upstream", kind=Provider.Kind.COMPATIBLE, base_url=upstream.url
    )
    (model,) = priced_models(provider, "acme/whisper")
    with committed():
        route_to(model)
    upstream.reply(Transcribed("Plain words."))

    response = transcribe(client, raw_key, response_format="text")

    assert response.content == b"Plain words.\n"
    assert response["Content-Type"].startswith("text/plain")
    assert OperationLog.objects.get().cost == Decimal("2.5") * AUDIO_PRICE


def test_a_reported_length_far_past_the_files_is_not_believed(
    client: Client, raw_key: str, deepgram: DeepgramServer, committed: Committed
) -> None:
    provider = Provider.objects.create(
        name="deepgram", kind=Provider.Kind.DEEPGRAM, base_url=deepgram.url
    )
    (model,) = priced_models(provider, "nova-3")
    with committed():
        route_to(model)
    deepgram.reply(Heard("Hi.", duration="3600"))

    transcribe(client, raw_key)

    assert OperationLog.objects.get().audio_seconds == Decimal("2.5")


# -- Deepgram ------------------------------------------------------------------------


def test_deepgram_answers_in_openais_shapes_priced_at_its_reported_duration(
    client: Client, raw_key: str, deepgram: DeepgramServer, committed: Committed
) -> None:
    provider = Provider.objects.create(
        name="deepgram", kind=Provider.Kind.DEEPGRAM, base_url=deepgram.url, api_key="dg-key"
    )
    (model,) = priced_models(provider, "nova-3")
    with committed():
        route_to(model)
    deepgram.reply(
        Heard("Hello there. General Kenobi.", duration="2.45"),
        Heard("Hello there. General Kenobi.", duration="2.45"),
    )

    verbose = transcribe(
        client,
        raw_key,
        response_format="verbose_json",
        **{"timestamp_granularities[]": ["segment", "word"]},
    )
    srt = transcribe(client, raw_key, response_format="srt", language="en")

    body = loads_exact(verbose.content)
    assert (body["text"], body["language"], body["duration"]) == (
        "Hello there. General Kenobi.",
        "en",
        Decimal("2.45"),
    )
    assert [(s["start"], s["end"], s["text"]) for s in body["segments"]] == [
        (0, 1, "Hello there."),
        (1, 2, "General Kenobi."),
    ]
    assert [w["word"] for w in body["words"]] == ["Hello", "there.", "General", "Kenobi."]
    assert srt.content.decode() == (
        "1\n00:00:00,000 --> 00:00:01,000\nHello there.\n\n"
        "2\n00:00:01,000 --> 00:00:02,000\nGeneral Kenobi.\n\n"
    )
    first, second = deepgram.requests
    assert first.headers["authorization"] == "Token dg-key"
    assert first.headers["content-type"] == "audio/wav"
    assert first.body == TWO_SECONDS
    assert first.query == {
        "model": "nova-3",
        "punctuate": "true",
        "utterances": "true",
        "detect_language": "true",
    }
    assert second.query["language"] == "en"
    assert "detect_language" not in second.query
    rows = OperationLog.objects.all()
    assert [(row.audio_seconds, row.cost) for row in rows] == [
        (Decimal("2.45"), Decimal("2.45") * AUDIO_PRICE)
    ] * 2


def test_a_failing_deepgram_falls_back_to_the_next_model(
    client: Client, raw_key: str, deepgram: DeepgramServer, committed: Committed
) -> None:
    provider = Provider.objects.create(
        name="deepgram", kind=Provider.Kind.DEEPGRAM, base_url=deepgram.url
    )
    primary, fallback = priced_models(provider, "nova-3", "nova-2")
    with committed():
        route_to(primary, fallback)
    deepgram.reply(Refused(503, "UNAVAILABLE", "try later"), Heard("From nova two."))

    response = transcribe(client, raw_key, response_format="text")

    assert response.status_code == 200
    assert response.content == b"From nova two.\n"
    assert [r.query["model"] for r in deepgram.requests] == ["nova-3", "nova-2"]
    row = OperationLog.objects.get()
    assert (row.model_used, row.fallback_used) == ("nova-2", True)
    assert [a["outcome"] for a in row.attempts] == ["error", "ok"]
    assert "try later" in row.attempts[0]["error"]


def test_a_deepgram_refusing_the_key_is_a_502_and_nothing_is_spent(
    client: Client, raw_key: str, deepgram: DeepgramServer, committed: Committed
) -> None:
    provider = Provider.objects.create(
        name="deepgram", kind=Provider.Kind.DEEPGRAM, base_url=deepgram.url
    )
    primary, fallback = priced_models(provider, "nova-3", "nova-2")
    with committed():
        route_to(primary, fallback)
    budget = Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal(10))
    deepgram.reply(Refused(401, "INVALID_AUTH", "Invalid credentials."))

    response = transcribe(client, raw_key)

    assert response.status_code == 502
    assert "Invalid credentials" in error_of(response)["message"]
    assert len(deepgram.requests) == 1  # a wrong key is no reason to try another model
    ledger = BudgetDay.objects.get(budget=budget)
    assert (ledger.spent, ledger.reserved) == (0, 0)
    assert OperationLog.objects.get().status == "error"


def test_an_upstream_failure_falls_back_from_openai_compatible_to_deepgram(
    client: Client,
    raw_key: str,
    upstream: OpenAIServer,
    deepgram: DeepgramServer,
    committed: Committed,
) -> None:
    compatible = Provider.objects.create(
        name="upstream", kind=Provider.Kind.COMPATIBLE, base_url=upstream.url
    )
    dg = Provider.objects.create(
        name="deepgram", kind=Provider.Kind.DEEPGRAM, base_url=deepgram.url
    )
    (whisper,) = priced_models(compatible, "acme/whisper")
    (nova,) = priced_models(dg, "nova-3")
    with committed():
        route_to(whisper, nova)
    upstream.reply(Failure(429, "slow down", headers={"Retry-After": "3"}))
    deepgram.reply(Heard("Deepgram heard it.", duration="2.5"))

    response = transcribe(client, raw_key)

    assert loads_exact(response.content) == {
        "text": "Deepgram heard it.",
        "usage": {"type": "duration", "seconds": 3},
    }
    assert OperationLog.objects.get().model_used == "nova-3"
