"""The official `openai` package's `audio.transcriptions.create` against the gateway
served by daphne (`live_server_url`), in each response format, with the cost in the
operation log checked against the catalog's price per second of audio.

The gateway runs in a process of its own, so everything it must see is committed:
these tests are transactional.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from importlib import import_module
from typing import Any

import httpx
import openai
import pytest
from django.apps import apps
from openai import OpenAI

from controlplane.approvals import decide_approval
from controlplane.models import Approval, FeatureToggle
from routing.models import AIModel, Budget, OperationLog, Provider, Route, ServiceKey
from routing.models.catalog import CallKind
from tests.controlplane.test_background import wait_for
from tests.routing.audio_files import wav
from tests.routing.deepgram_server import DeepgramServer, Heard
from tests.routing.openai_server import OpenAIServer, Transcribed

pytestmark = pytest.mark.django_db(transaction=True)

SEED = import_module("routing.migrations.0002_seed_catalog_policies_routes")
TRANSCRIBE_ROUTE = import_module("routing.migrations.0017_transcription_route")
AUDIO = wav("3.2")
PRICE = Decimal("0.000125")  # USD per second of audio
ANSWERED: list[str] = []


@pytest.fixture(autouse=True)
def _seeded() -> None:
    # The flush after an earlier transactional test removed what the migrations seeded.
    SEED.seed(apps, None)
    TRANSCRIBE_ROUTE.seed(apps, None)


def _note_request_id(response: httpx.Response) -> None:
    if request_id := response.headers.get("x-request-id"):
        ANSWERED.append(request_id)


@pytest.fixture
def gateway(live_server_url: str) -> Iterator[OpenAI]:
    ANSWERED.clear()
    raw = ServiceKey.issue(name="notes", service="meetings", default_operation="transcribe")[1]
    client = OpenAI(
        base_url=f"{live_server_url}/v1",
        api_key=raw,
        max_retries=0,
        timeout=30,
        http_client=httpx.Client(event_hooks={"response": [_note_request_id]}),
    )
    yield client
    client.close()
    # Each answered call's row is written just after the answer: wait for them all, so
    # that none lands in the next test's (flushed) database.
    for request_id in ANSWERED:
        logged_call(request_id)


def logged_call(request_id: str | None = None) -> OperationLog:
    rows = OperationLog.objects.filter(request_id=request_id or ANSWERED[-1])
    wait_for(rows.exists)
    return rows.get()


def route_to(provider: Provider, model_id: str) -> AIModel:
    model = AIModel.objects.create(
        provider=provider, model_id=model_id, kind=CallKind.TRANSCRIPTION, price_audio_second=PRICE
    )
    Route.objects.filter(operation="transcribe").update(primary_model=model)
    return model


def test_json_from_the_offline_model(gateway: OpenAI) -> None:
    transcription = gateway.audio.transcriptions.create(
        model="whisper-1", file=("meeting.wav", AUDIO, "audio/wav")
    )

    assert transcription.text.startswith("Transcript of meeting.wav, 3.2 seconds of audio.")
    row = logged_call()
    assert (row.kind, row.operation, row.service, row.status) == (
        "transcription",
        "transcribe",
        "meetings",
        "ok",
    )
    assert (row.audio_seconds, row.cost) == (Decimal("3.2"), 0)


def test_text_srt_and_vtt_come_back_as_text(gateway: OpenAI) -> None:
    upload = ("meeting.wav", AUDIO, "audio/wav")

    text = gateway.audio.transcriptions.create(
        model="whisper-1", file=upload, response_format="text"
    )
    srt = gateway.audio.transcriptions.create(model="whisper-1", file=upload, response_format="srt")
    vtt = gateway.audio.transcriptions.create(model="whisper-1", file=upload, response_format="vtt")

    assert text.startswith("Transcript of meeting.wav, 3.2 seconds of audio.")
    assert srt.startswith("1\n00:00:00,000 --> ")
    assert "\n\n2\n" in srt
    assert srt.rstrip().endswith("for real transcripts.")
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> ")
    assert "--> 00:00:03.200\n" in vtt


def test_verbose_json_with_words_and_segments(gateway: OpenAI) -> None:
    verbose = gateway.audio.transcriptions.create(
        model="whisper-1",
        file=("meeting.wav", AUDIO, "audio/wav"),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
        language="en",
    )

    assert (verbose.language, verbose.duration) == ("en", 3.2)
    assert verbose.segments is not None
    assert verbose.segments[-1].end == 3.2
    assert verbose.words is not None
    assert verbose.words[0].word == "Transcript"
    assert " ".join(word.word for word in verbose.words) == verbose.text


def test_a_priced_upstream_is_charged_its_reported_seconds_at_the_catalog_price(
    gateway: OpenAI, upstream: OpenAIServer
) -> None:
    provider = Provider.objects.create(
        name="upstream", kind=Provider.Kind.COMPATIBLE, base_url=upstream.url, timeout_seconds=10
    )
    model = route_to(provider, "acme/whisper")
    upstream.reply(Transcribed("Priced upstream.", duration="3.1"))

    verbose = gateway.audio.transcriptions.create(
        model="whisper-1", file=("meeting.wav", AUDIO, "audio/wav"), response_format="verbose_json"
    )

    assert verbose.text == "Priced upstream."
    row = logged_call()
    assert row.model_used == "acme/whisper"
    assert row.audio_seconds == Decimal("3.1")
    assert row.cost == model.price_audio_second * Decimal("3.1")
    assert upstream.requests[0].form is not None
    assert upstream.requests[0].form["file"][2] == AUDIO


def test_deepgram_behind_the_gateway_is_charged_its_reported_duration(
    gateway: OpenAI,
) -> None:
    with DeepgramServer() as deepgram:
        provider = Provider.objects.create(
            name="deepgram", kind=Provider.Kind.DEEPGRAM, base_url=deepgram.url, api_key="dg"
        )
        model = route_to(provider, "nova-3")
        deepgram.reply(Heard("Deepgram heard this.", duration="3.19"))

        transcription = gateway.audio.transcriptions.create(
            model="whisper-1", file=("meeting.wav", AUDIO, "audio/wav")
        )

    assert transcription.text == "Deepgram heard this."
    row = logged_call()
    assert (row.audio_seconds, row.cost) == (
        Decimal("3.19"),
        model.price_audio_second * Decimal("3.19"),
    )


def test_another_operation_is_named_with_a_header(gateway: OpenAI) -> None:
    gateway.audio.transcriptions.create(
        model="whisper-1",
        file=("meeting.wav", AUDIO, "audio/wav"),
        extra_headers={"X-Operation": "summarize"},
    )

    assert logged_call().operation == "summarize"


def test_a_budget_refusal_raises_rate_limit_error(gateway: OpenAI, upstream: OpenAIServer) -> None:
    provider = Provider.objects.create(
        name="upstream", kind=Provider.Kind.COMPATIBLE, base_url=upstream.url
    )
    route_to(provider, "acme/whisper")
    Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=Decimal(0))

    with pytest.raises(openai.RateLimitError) as refused:
        gateway.audio.transcriptions.create(
            model="whisper-1", file=("meeting.wav", AUDIO, "audio/wav")
        )

    assert refused.value.code == "budget_exceeded"
    assert upstream.requests == []


def test_an_approval_is_waited_on_and_named_in_a_header(gateway: OpenAI, owner: Any) -> None:
    Route.objects.filter(operation="transcribe").update(spends_money=True)
    upload = ("meeting.wav", AUDIO, "audio/wav")

    with pytest.raises(openai.PermissionDeniedError) as asked:
        gateway.audio.transcriptions.create(model="whisper-1", file=upload)
    body: Any = asked.value.body
    assert asked.value.code == "approval_required"
    decide_approval(Approval.objects.get(pk=body["approval_id"]), user=owner, approve=True)

    transcription = gateway.audio.transcriptions.create(
        model="whisper-1", file=upload, extra_headers={"X-Approval-Id": str(body["approval_id"])}
    )

    assert transcription.text.startswith("Transcript of meeting.wav")


def test_the_kill_switch_raises_a_server_error(gateway: OpenAI) -> None:
    toggle = FeatureToggle.objects.get(key="operation.transcribe.enabled")
    toggle.enabled = False
    toggle.save()

    with pytest.raises(openai.InternalServerError) as refused:
        gateway.audio.transcriptions.create(
            model="whisper-1", file=("meeting.wav", AUDIO, "audio/wav")
        )

    assert (refused.value.status_code, refused.value.code) == (503, "feature_off")


def test_bad_input_raises_bad_request_naming_the_field(gateway: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as not_audio:
        gateway.audio.transcriptions.create(
            model="whisper-1", file=("notes.txt", b"just some text", "text/plain")
        )
    with pytest.raises(openai.BadRequestError) as wrong_format:
        gateway.audio.transcriptions.create(
            model="whisper-1",
            file=("meeting.wav", AUDIO, "audio/wav"),
            response_format="xml",  # type: ignore[arg-type]
        )

    assert (not_audio.value.param, wrong_format.value.param) == ("file", "response_format")
    assert not OperationLog.objects.exists()


def test_a_file_past_the_forms_memory_limit_is_taken_and_one_past_25_mb_is_refused(
    gateway: OpenAI,
) -> None:
    # Five minutes of 8 kHz audio (4.8 MB): past DATA_UPLOAD_MAX_MEMORY_SIZE, within 25 MB.
    five_minutes = gateway.audio.transcriptions.create(
        model="whisper-1", file=("long.wav", wav(300), "audio/wav")
    )
    # 28 minutes: 26.9 MB, past GATEWAY_TRANSCRIPTION_MAX_BYTES' default (25 MiB).
    with pytest.raises(openai.APIStatusError) as refused:
        gateway.audio.transcriptions.create(
            model="whisper-1", file=("longer.wav", wav(28 * 60), "audio/wav")
        )

    assert five_minutes.text.startswith("Transcript of long.wav, 300 seconds of audio.")
    assert refused.value.status_code == 413
    assert "26,214,400 bytes (GATEWAY_TRANSCRIPTION_MAX_BYTES)" in refused.value.message
    assert [row.audio_seconds for row in OperationLog.objects.all()] == [300]
