"""The Deepgram provider against a real local fake of Deepgram's `/v1/listen`
(`DeepgramServer`): what it sends, how it normalises the answer, how failures map to
`ProviderError`, and that `provider_for` picks it by kind."""

from __future__ import annotations

from decimal import Decimal

import pytest

from routing.models import Provider
from routing.providers import DeepgramProvider, ProviderError, provider_for
from routing.providers.deepgram import DEFAULT_BASE_URL
from routing.providers.transcription import Segment, TranscriptionRequest, Word
from tests.local_servers import closed_port
from tests.routing.audio_files import wav
from tests.routing.deepgram_server import DeepgramServer, Heard, Raw, Refused

AUDIO = wav("1.5")
KEY = "dg-secret-key"


def request(**fields: object) -> TranscriptionRequest:
    defaults: dict[str, object] = {
        "model": "nova-3",
        "audio": AUDIO,
        "filename": "call.wav",
        "content_type": "audio/wav",
        "seconds": Decimal("1.5"),
    }
    return TranscriptionRequest(**{**defaults, **fields})  # type: ignore[arg-type]


@pytest.fixture
def server() -> object:
    with DeepgramServer() as fake:
        yield fake


def test_it_posts_the_audio_with_the_key_as_a_token(server: DeepgramServer) -> None:
    DeepgramProvider(server.url, KEY).transcribe(request(language="de"))

    sent = server.requests[0]
    assert (sent.path, sent.body) == ("/v1/listen", AUDIO)
    assert sent.headers["authorization"] == f"Token {KEY}"
    assert sent.headers["content-type"] == "audio/wav"
    assert sent.query == {
        "model": "nova-3",
        "language": "de",
        "punctuate": "true",
        "utterances": "true",
    }


def test_a_base_url_ending_in_v1_is_not_doubled(server: DeepgramServer) -> None:
    DeepgramProvider(f"{server.url}/v1/", KEY).transcribe(request())

    assert server.requests[0].path == "/v1/listen"


def test_the_answer_is_normalised_to_text_segments_words_language_and_duration(
    server: DeepgramServer,
) -> None:
    server.reply(Heard("Good morning. Shall we start?", duration="2.875", language="en"))

    transcript = DeepgramProvider(server.url, KEY).transcribe(request())

    assert transcript.text == "Good morning. Shall we start?"
    assert (transcript.language, transcript.seconds) == ("en", Decimal("2.875"))
    assert transcript.segments == [
        Segment(Decimal(0), Decimal(1), "Good morning."),
        Segment(Decimal(1), Decimal("2.5"), "Shall we start?."),
    ]
    assert transcript.words[0] == Word("Good", Decimal(0), Decimal("0.5"))
    assert [word.word for word in transcript.words] == ["Good", "morning.", "Shall", "we", "start?"]
    assert transcript.answer is None  # written in the asked format by the gateway


def test_without_utterances_the_paragraphs_sentences_are_the_segments(
    server: DeepgramServer,
) -> None:
    server.reply(Heard("One. Two.", utterances=False))

    transcript = DeepgramProvider(server.url, KEY).transcribe(request())

    assert [segment.text for segment in transcript.segments] == ["One.", "Two."]


def test_a_bare_answer_is_one_segment_and_no_reported_duration(server: DeepgramServer) -> None:
    server.reply(
        Raw(
            b'{"metadata": {}, "results": {"channels": [{"alternatives": '
            b'[{"transcript": "just text"}]}]}}'
        )
    )

    transcript = DeepgramProvider(server.url, KEY).transcribe(request(language="en"))

    assert transcript.segments == [Segment(Decimal(0), Decimal(0), "just text")]
    assert (transcript.seconds, transcript.language, transcript.words) == (None, "en", [])


@pytest.mark.parametrize(
    ("reply", "code", "retryable"),
    [
        (Refused(401, "INVALID_AUTH", f"Invalid credentials {KEY}."), "unauthorized", False),
        (Refused(403, "FORBIDDEN", "no access"), "forbidden", False),
        (Refused(400, "Bad Request", "Bad sample rate"), "bad_request", False),
        (Refused(413, "Payload Too Large", "too big"), "bad_request", False),
        (
            Refused(400, "Bad Request", "No such model/language/tier combination found."),
            "model_not_found",
            True,
        ),
        (Refused(402, "ASR_PAYMENT_REQUIRED", "out of credit"), "payment_required", True),
        (Refused(404, "Not Found", "gone"), "model_not_found", True),
        (Refused(500, "INTERNAL", "oops"), "upstream_error", True),
        (Refused(503, "UNAVAILABLE", "later"), "upstream_error", True),
        (Raw(b'{"metadata": {}}'), "invalid_response", True),
        (Raw(b"<html>"), "invalid_response", True),
    ],
)
def test_failures_map_to_provider_errors_saying_whether_to_fall_back(
    server: DeepgramServer, reply: Refused | Raw, code: str, retryable: bool
) -> None:
    server.reply(reply)

    with pytest.raises(ProviderError) as failed:
        DeepgramProvider(server.url, KEY, label="dg").transcribe(request())

    assert (failed.value.code, failed.value.retryable) == (code, retryable)
    assert str(failed.value).startswith("dg: ")
    assert KEY not in str(failed.value)
    if isinstance(reply, Refused):
        assert failed.value.status == reply.status
        assert reply.err_msg.replace(KEY, "[redacted]") in str(failed.value)


def test_a_rate_limit_is_retryable_after_the_wait_deepgram_asks(server: DeepgramServer) -> None:
    server.reply(Refused(429, "TOO_MANY_REQUESTS", "slow down", headers={"Retry-After": "4"}))

    with pytest.raises(ProviderError) as failed:
        DeepgramProvider(server.url, KEY).transcribe(request())

    assert (failed.value.code, failed.value.retryable) == ("rate_limited", True)
    assert failed.value.retry_after == 4


def test_no_server_is_a_retryable_connection_failure() -> None:
    with pytest.raises(ProviderError) as failed:
        DeepgramProvider(f"http://127.0.0.1:{closed_port()}", KEY).transcribe(request())

    assert (failed.value.code, failed.value.retryable) == ("connection_failed", True)


def test_a_chat_asked_of_deepgram_is_refused_and_not_retried(server: DeepgramServer) -> None:
    from routing.providers import ChatRequest

    provider = DeepgramProvider(server.url, KEY)
    chat = ChatRequest(model="nova-3", messages=[{"role": "user", "content": "hi"}])

    for ask in (provider.complete, lambda r: list(provider.stream(r))):
        with pytest.raises(ProviderError) as refused:
            ask(chat)
        assert (refused.value.code, refused.value.retryable) == ("unsupported_call", False)
        assert "transcribes audio only" in str(refused.value)
    assert server.requests == []


@pytest.mark.django_db
def test_provider_for_picks_deepgram_by_kind_with_its_default_base_url() -> None:
    provider = Provider.objects.create(name="dg", kind=Provider.Kind.DEEPGRAM, api_key=KEY)

    client = provider_for(provider)

    assert isinstance(client, DeepgramProvider)
    assert client.url == f"{DEFAULT_BASE_URL}/v1/listen"
    assert KEY not in repr(client)


@pytest.mark.django_db
def test_a_transcription_model_has_no_price_per_1k_tokens_and_is_routable() -> None:
    from routing.models import AIModel
    from routing.models.catalog import CallKind
    from routing.snapshots import routing_table

    provider = Provider.objects.create(name="dg", kind=Provider.Kind.DEEPGRAM)
    model = AIModel.objects.create(
        provider=provider,
        model_id="nova-3",
        kind=CallKind.TRANSCRIPTION,
        price_audio_second=Decimal("0.0001"),
    )

    assert model.price_per_1k() is None
    assert not model.price_missing
    assert routing_table().providers[provider.pk].kind == "deepgram"
