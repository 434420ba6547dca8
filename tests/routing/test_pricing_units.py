"""Pricing calls by their units besides tokens: embeddings (input tokens), transcription
(seconds of audio), speech (characters), and a chat's images, audio and video
seconds. Exact Decimal results; a missing unit price raises, never prices at zero."""

from __future__ import annotations

from decimal import Decimal

import pytest

from routing.call_units import CallUnits
from routing.models.catalog import CallKind
from routing.pricing import PriceMissing, cost_of, estimate_cost, missing_prices, needed_prices
from routing.providers.base import Usage
from tests.routing.test_pricing import make_model

pytestmark = pytest.mark.django_db

D = Decimal


def test_an_embedding_costs_its_input_tokens_at_the_prompt_price():
    model = make_model("openai/text-embedding-3-small", prompt="0.00000002")

    cost, source = cost_of(model, Usage(prompt_tokens=12_345), CallKind.EMBEDDING)

    assert cost == D("0.0002469")  # 12,345 x 0.00000002
    assert source == "catalog"


def test_an_embedding_needs_no_completion_price():
    model = make_model("acme/embed", prompt="0.0000001")

    assert needed_prices(CallKind.EMBEDDING) == ("price_prompt",)
    assert estimate_cost(model, 1000, 0, kind=CallKind.EMBEDDING) == D("0.0001")


def test_a_transcription_costs_its_seconds_of_audio_at_the_per_second_price():
    model = make_model("openai/whisper-1", audio_second="0.0001")
    usage = Usage(prompt_tokens=50, completion_tokens=80, audio_seconds=D("61.437"))

    cost, _ = cost_of(model, usage, CallKind.TRANSCRIPTION)

    assert cost == D("0.0061437")  # tokens are not charged, 61.437 s x 0.0001


def test_a_transcription_estimate_is_its_measured_seconds_plus_the_request_price():
    model = make_model("openai/whisper-1", audio_second="0.0001", request="0.001")
    units = CallUnits(CallKind.TRANSCRIPTION, audio_seconds=D("12.5"))

    assert estimate_cost(model, 0, 0, kind=CallKind.TRANSCRIPTION, units=units) == D("0.00225")


def test_speech_costs_its_characters_at_the_per_character_price():
    model = make_model("openai/tts-1", character="0.000015")

    cost, _ = cost_of(model, Usage(characters=1234), CallKind.SPEECH)

    assert cost == D("0.01851")  # 1,234 x 0.000015
    assert estimate_cost(
        model, 0, 0, kind=CallKind.SPEECH, units=CallUnits(CallKind.SPEECH, characters=1234)
    ) == D("0.01851")


def test_a_chat_with_images_costs_its_tokens_plus_each_image_at_the_image_price():
    model = make_model("openai/gpt-4o", prompt="0.0000025", completion="0.00001", image="0.003613")
    usage = Usage(prompt_tokens=1000, completion_tokens=200, images=3)

    cost, _ = cost_of(model, usage)

    # 1,000 x 0.0000025 + 200 x 0.00001 + 3 x 0.003613 = 0.0025 + 0.002 + 0.010839
    assert cost == D("0.015339")


def test_a_chat_with_audio_and_video_costs_their_seconds_at_their_prices():
    model = make_model(
        "google/gemini",
        prompt="0.0000001",
        completion="0.0000004",
        audio_second="0.00003",
        video_second="0.0001",
    )
    usage = Usage(
        prompt_tokens=10, completion_tokens=5, audio_seconds=D("2.5"), video_seconds=D("600")
    )

    cost, _ = cost_of(model, usage)

    # 10 x 0.0000001 + 5 x 0.0000004 + 2.5 x 0.00003 + 600 x 0.0001
    assert cost == D("0.060078")


def test_a_chat_estimate_reserves_the_images_measured_from_the_request():
    model = make_model("openai/gpt-4o", prompt="0.0000025", completion="0.00001", image="0.003613")
    units = CallUnits(CallKind.CHAT, images=2)

    estimate = estimate_cost(model, 100, 50, units=units)

    assert estimate == D("0.007976")  # 0.00025 + 0.0005 + 2 x 0.003613


def test_a_unit_the_chat_does_not_carry_needs_no_price():
    model = make_model("acme/text", prompt="0.000001", completion="0.000002")

    cost, _ = cost_of(model, Usage(prompt_tokens=1, completion_tokens=1))

    assert cost == D("0.000003")
    assert missing_prices(model, CallKind.CHAT, CallUnits()) == []


@pytest.mark.parametrize(
    ("kind", "usage", "missing"),
    [
        (CallKind.EMBEDDING, Usage(prompt_tokens=10), ("price_prompt",)),
        (CallKind.TRANSCRIPTION, Usage(audio_seconds=D(3)), ("price_audio_second",)),
        (CallKind.SPEECH, Usage(characters=10), ("price_character",)),
        (CallKind.CHAT, Usage(prompt_tokens=1, images=1), ("price_image",)),
        (CallKind.CHAT, Usage(prompt_tokens=1, audio_seconds=D(1)), ("price_audio_second",)),
        (CallKind.CHAT, Usage(prompt_tokens=1, video_seconds=D(1)), ("price_video_second",)),
    ],
)
def test_a_missing_unit_price_raises_price_missing_naming_it(kind, usage, missing):
    # Chat's token prices are listed: only the unit's own price is missing.
    model = make_model(f"acme/{kind}", completion="0.000002")
    if kind != CallKind.EMBEDDING:
        model.price_prompt = D("0.000001")

    with pytest.raises(PriceMissing) as raised:
        cost_of(model, usage, kind)
    with pytest.raises(PriceMissing):
        estimate_cost(model, 10, 10, kind=kind, units=usage)

    assert raised.value.missing == missing
    assert missing[0].removeprefix("price_").replace("_", " ") in str(raised.value)
    assert "never priced at zero" in str(raised.value)


def test_a_reported_cost_wins_over_unit_prices_even_when_one_is_missing():
    model = make_model("openai/whisper-1")

    cost, source = cost_of(
        model, Usage(audio_seconds=D(30), reported_cost=D("0.003")), CallKind.TRANSCRIPTION
    )

    assert (cost, source) == (D("0.003"), "provider")


def test_the_offline_model_prices_every_kind_at_zero():
    model = make_model("offline/echo", kind="offline")

    for kind in CallKind.values:
        assert cost_of(model, Usage(prompt_tokens=5, audio_seconds=D(2), characters=3), kind) == (
            D(0),
            "offline",
        )
        assert estimate_cost(model, 5, 5, kind=kind) == D(0)
