"""Chat completions whose messages carry image, audio or video parts, through the
official `openai` package against the gateway under daphne: each part is priced by its
unit from the catalog (images x price_image, seconds from the file's header x the
per-second price), a part no model of the route has a price for is refused before
anything is reserved, and routing passes over a model that lacks the part's price.
"""

from __future__ import annotations

import base64
import io
import wave
from decimal import Decimal
from typing import Any

import openai
import pytest
from django.conf import settings
from openai import OpenAI

from routing.models import (
    AIModel,
    Budget,
    BudgetDay,
    OperationLog,
    Provider,
    Reservation,
    Route,
    RouteFallback,
)
from tests.routing.openai_server import Answer, OpenAIServer
from tests.routing.test_gateway_openai_client import _seeded, gateway, logged_call, raw_key

pytestmark = pytest.mark.django_db(transaction=True)
__all__ = ["_seeded", "gateway", "raw_key"]  # fixtures, shared with the client tests

D = Decimal
USAGE = {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150}
TOKENS_COST = 120 * D("0.000001") + 30 * D("0.000002")  # at upstream_model's token prices
PIXEL_PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def wav_base64(seconds: float, rate: int = 8000) -> str:
    """A silent mono 16-bit WAV of `seconds`, made with the standard library."""
    out = io.BytesIO()
    with wave.open(out, "wb") as sound:
        sound.setnchannels(1)
        sound.setsampwidth(2)
        sound.setframerate(rate)
        sound.writeframes(b"\0\0" * int(seconds * rate))
    return base64.b64encode(out.getvalue()).decode()


def upstream_model(server: OpenAIServer, model_id: str = "acme/vision", **prices: str) -> AIModel:
    provider, _ = Provider.objects.get_or_create(
        name="upstream",
        defaults={"kind": Provider.Kind.COMPATIBLE, "base_url": server.url, "timeout_seconds": 10},
    )
    return AIModel.objects.create(
        provider=provider,
        model_id=model_id,
        context_length=128_000,
        price_prompt=D("0.000001"),
        price_completion=D("0.000002"),
        **{f"price_{name}": D(value) for name, value in prices.items()},
    )


def route_chat_to(model: AIModel, *fallbacks: AIModel) -> Route:
    route = Route.objects.get(operation="chat")
    route.primary_model = model
    route.save()
    for position, fallback in enumerate(fallbacks):
        RouteFallback.objects.create(route=route, model=fallback, position=position)
    return route


def with_part(part: dict[str, Any]) -> Any:
    return [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, part]}]


IMAGE_PART = {"type": "image_url", "image_url": {"url": PIXEL_PNG}}


def test_an_image_part_costs_its_tokens_plus_the_catalogs_image_price(
    gateway: OpenAI, upstream: OpenAIServer
) -> None:
    route_chat_to(upstream_model(upstream, image="0.003613"))
    upstream.reply(Answer("A single pixel.", usage=USAGE))

    completion = gateway.chat.completions.create(
        model="acme/vision", messages=with_part(IMAGE_PART)
    )

    assert completion.choices[0].message.content == "A single pixel."
    row = logged_call()
    assert row.cost == TOKENS_COST + 1 * D("0.003613") == D("0.003793")
    assert (row.kind, row.images, row.cost_source) == ("chat", 1, "catalog")
    assert upstream.requests[0].json["messages"][0]["content"][1] == IMAGE_PART


def test_an_audio_part_costs_its_seconds_from_the_wav_header(
    gateway: OpenAI, upstream: OpenAIServer
) -> None:
    route_chat_to(upstream_model(upstream, audio_second="0.00003"))
    upstream.reply(Answer("Silence.", usage=USAGE))
    part = {"type": "input_audio", "input_audio": {"data": wav_base64(2.5), "format": "wav"}}

    gateway.chat.completions.create(model="acme/vision", messages=with_part(part))

    row = logged_call()
    assert row.audio_seconds == D("2.5")
    assert row.cost == TOKENS_COST + D("2.5") * D("0.00003") == D("0.000255")


def test_a_video_part_for_a_model_without_a_video_price_is_refused_before_any_reservation(
    gateway: OpenAI, upstream: OpenAIServer
) -> None:
    route_chat_to(upstream_model(upstream, image="0.003613"))
    budget = Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=D(10))
    part = {"type": "video_url", "video_url": {"url": "https://example.com/clip.mp4"}}

    with pytest.raises(openai.BadRequestError) as refused:
        gateway.chat.completions.create(model="acme/vision", messages=with_part(part))

    error = refused.value
    assert error.status_code == 400
    assert error.param == "messages[0].content[1]"
    assert "video second price" in error.message
    assert upstream.requests == []
    assert not Reservation.objects.exists()
    assert not BudgetDay.objects.filter(budget=budget).exclude(reserved=0, spent=0).exists()
    assert not OperationLog.objects.exclude(status="refused").exists()


def test_an_input_audio_part_that_is_not_audio_is_refused_naming_its_data_field(
    gateway: OpenAI, upstream: OpenAIServer
) -> None:
    route_chat_to(upstream_model(upstream, audio_second="0.00003"))
    Budget.objects.create(scope=Budget.Scope.GLOBAL, daily_limit=D(10))
    not_audio = base64.b64encode(b"these bytes are a note, not a sound").decode()
    part = {"type": "input_audio", "input_audio": {"data": not_audio, "format": "wav"}}

    with pytest.raises(openai.BadRequestError) as refused:
        gateway.chat.completions.create(model="acme/vision", messages=with_part(part))

    assert refused.value.param == "messages[0].content[1].input_audio.data"
    assert "not a readable audio file" in refused.value.message
    assert upstream.requests == []
    assert not Reservation.objects.exists()


def test_routing_passes_over_a_model_without_the_image_price_to_a_fallback_that_has_it(
    gateway: OpenAI, upstream: OpenAIServer
) -> None:
    text_only = upstream_model(upstream, "acme/text-only")
    vision = upstream_model(upstream, "acme/vision", image="0.002")
    route_chat_to(text_only, vision)
    upstream.reply(Answer("Seen.", usage=USAGE))

    gateway.chat.completions.create(model="acme/text-only", messages=with_part(IMAGE_PART))

    row = logged_call()
    assert row.model_used == "acme/vision"
    assert row.cost == TOKENS_COST + D("0.002")
    assert [request.json["model"] for request in upstream.requests] == ["acme/vision"]


def test_a_video_by_url_is_priced_at_the_assumed_seconds_and_the_log_says_so(
    gateway: OpenAI, upstream: OpenAIServer
) -> None:
    route_chat_to(upstream_model(upstream, video_second="0.0001"))
    upstream.reply(Answer("A clip.", usage=USAGE))
    part = {"type": "video_url", "video_url": {"url": "https://example.com/clip.mp4"}}

    gateway.chat.completions.create(model="acme/vision", messages=with_part(part))

    row = logged_call()
    assumed = D(settings.GATEWAY_VIDEO_SECONDS_ASSUMED)
    assert row.video_seconds == assumed
    assert row.cost == TOKENS_COST + assumed * D("0.0001")
    assert "Assumed: messages[0].content[1]: a video by URL counted as" in row.usage_flag
