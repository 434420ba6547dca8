"""sync_models reads what a model does and its prices per unit: the kind from its
output modalities, the per-image price for a model that reads images, OpenRouter's
embeddings list as embedding models; a unit price the list gives in another unit (or
not at all) stays unknown, flagged in the report, never zero."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from routing.models import AIModel
from routing.models.catalog import CallKind
from tests.routing.catalog_server import ModelListServer, listed_model, listing

pytestmark = pytest.mark.django_db

D = Decimal
TEXT_IN = {"input_modalities": ["text"], "output_modalities": ["text"]}


def sync(*args: str) -> str:
    out = StringIO()
    call_command("sync_models", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def model(model_id: str) -> AIModel:
    return AIModel.objects.get(provider__name="openrouter", model_id=model_id)


def architecture(inputs: list[str], outputs: list[str]) -> dict[str, Any]:
    return {"architecture": {"input_modalities": inputs, "output_modalities": outputs}}


def vision(model_id: str = "acme/vision", image: str = "0.003613") -> dict[str, Any]:
    return listed_model(
        model_id, pricing={"image": image}, **architecture(["text", "image"], ["text"])
    )


def embedding(model_id: str = "openai/text-embedding-3-small", prompt: str = "0.00000002") -> Any:
    return listed_model(
        model_id, prompt, "0", parameters=(), **architecture(["text"], ["embeddings"])
    )


@pytest.fixture
def server() -> Any:
    with ModelListServer(listing(listed_model("acme/text"))) as running:
        yield running


def test_a_model_that_reads_images_gets_its_per_image_price_exactly(server):
    server.serve(listing(vision()))

    sync("--url", server.url)

    assert model("acme/vision").price_image == D("0.003613")
    assert model("acme/vision").kind == CallKind.CHAT
    assert "vision" in model("acme/vision").capabilities


def test_a_text_only_models_image_price_of_zero_is_no_price_not_free(server):
    # OpenRouter lists "image": "0" for models that cannot read an image at all.
    server.serve(listing(listed_model("acme/text", pricing={"image": "0"})))

    sync("--url", server.url)

    assert model("acme/text").price_image is None
    assert not model("acme/text").price_missing  # still priced for plain chat


def test_audio_and_video_inputs_stay_unpriced_per_second_and_the_report_says_why(server):
    gemini = listed_model(
        "google/gemini-flash",
        pricing={"audio": "0.0000007", "image": "0.0000258"},
        **architecture(["text", "image", "audio", "video"], ["text"]),
    )
    server.serve(listing(gemini))

    out = sync("--url", server.url)

    row = model("google/gemini-flash")
    assert (row.price_audio_second, row.price_video_second) == (None, None)
    assert row.price_image == D("0.0000258")
    line = next(line for line in out.splitlines() if "google/gemini-flash:" in line)
    assert "audio second unknown (audio is listed per token, not per second)" in line
    assert "video second unknown" in line
    assert "not routed to it" in line


def test_transcription_and_speech_models_get_their_kind_and_are_flagged_without_a_unit_price(
    server,
):
    server.serve(
        listing(
            listed_model("acme/text"),
            listed_model("openai/whisper-1", **architecture(["audio"], ["transcription"])),
            listed_model("acme/tts", **architecture(["text"], ["speech"])),
        )
    )

    out = sync("--url", server.url)

    whisper, tts = model("openai/whisper-1"), model("acme/tts")
    assert (whisper.kind, tts.kind) == (CallKind.TRANSCRIPTION, CallKind.SPEECH)
    assert whisper.price_missing
    assert tts.price_missing
    assert whisper.price_audio_second is None
    assert tts.price_character is None
    assert "  ! openai/whisper-1: no audio_second price (flagged, never priced at zero)" in out
    assert "  ! acme/tts: no character price (flagged, never priced at zero)" in out
    assert "2 flagged for a missing price" in out


def test_a_model_that_serves_no_kind_of_call_is_skipped_and_counted(server):
    server.serve(
        listing(
            listed_model("acme/text"),
            listed_model("acme/painter", **architecture(["text"], ["image"])),
        )
    )

    out = sync("--url", server.url)

    assert not AIModel.objects.filter(model_id="acme/painter").exists()
    assert "1 skipped (no kind of call the gateway makes)" in out


def test_the_embeddings_list_is_synced_as_embedding_models(server):
    server.serve_embeddings(
        listing(listed_model("openai/text-embedding-3-small", "0.00000002", "0"))
    )

    out = sync("--url", server.url, "--embeddings-url", server.embeddings_url)

    row = model("openai/text-embedding-3-small")
    assert row.kind == CallKind.EMBEDDING
    assert row.price_prompt == D("0.00000002")
    assert not row.price_missing
    assert "2 added" in out
    assert server.requests == ["/api/v1/models", "/api/v1/embeddings/models"]


def test_an_embedding_model_in_the_main_list_is_kept_once(server):
    server.serve(listing(listed_model("acme/text"), embedding()))
    server.serve_embeddings(listing(embedding()))

    sync("--url", server.url, "--embeddings-url", server.embeddings_url)

    assert model("openai/text-embedding-3-small").kind == CallKind.EMBEDDING
    assert AIModel.objects.filter(model_id="openai/text-embedding-3-small").count() == 1


def test_an_embedding_model_gone_from_the_embeddings_list_is_deactivated(server):
    server.serve_embeddings(listing(embedding(), embedding("acme/embed-old")))
    sync("--url", server.url, "--embeddings-url", server.embeddings_url)
    server.serve_embeddings(listing(embedding()))

    out = sync("--url", server.url, "--embeddings-url", server.embeddings_url)

    assert model("acme/embed-old").active is False
    assert "  - acme/embed-old (inactive)" in out


def test_without_the_embeddings_list_embedding_models_are_left_as_they_were(server):
    server.serve_embeddings(listing(embedding()))
    sync("--url", server.url, "--embeddings-url", server.embeddings_url)

    out = sync("--url", server.url)  # the main list alone never lists them

    assert model("openai/text-embedding-3-small").active is True
    assert "0 deactivated" in out


def test_an_embeddings_list_that_fails_leaves_embedding_models_and_syncs_the_rest(server):
    server.serve_embeddings(listing(embedding()))
    sync("--url", server.url, "--embeddings-url", server.embeddings_url)
    server.serve(listing(listed_model("acme/text", "0.000005")))
    server.serve_embeddings({"error": "unauthorized"}, status=401)

    out = sync("--url", server.url, "--embeddings-url", server.embeddings_url)

    assert model("acme/text").price_prompt == D("0.000005")
    assert model("openai/text-embedding-3-small").active is True
    assert "embeddings list not read (Could not load the model list from" in out
    assert "HTTP 401" in out


def test_an_empty_embeddings_list_deactivates_nothing(server):
    server.serve_embeddings(listing(embedding()))
    sync("--url", server.url, "--embeddings-url", server.embeddings_url)
    server.serve_embeddings(listing())

    out = sync("--url", server.url, "--embeddings-url", server.embeddings_url)

    assert model("openai/text-embedding-3-small").active is True
    assert "embeddings list not read (The model list is empty" in out


def test_a_kind_change_is_reported_and_saved(server):
    server.serve(listing(listed_model("acme/text")))
    sync("--url", server.url)
    server.serve(listing(listed_model("acme/text", **architecture(["audio"], ["transcription"]))))

    out = sync("--url", server.url)

    assert model("acme/text").kind == CallKind.TRANSCRIPTION
    assert "  ~ acme/text: kind chat -> transcription" in out


def test_a_dry_run_with_the_embeddings_list_changes_nothing(server):
    server.serve_embeddings(listing(embedding()))
    before = list(AIModel.objects.values())

    out = sync("--url", server.url, "--embeddings-url", server.embeddings_url, "--dry-run")

    assert list(AIModel.objects.values()) == before
    assert "+ openai/text-embedding-3-small" in out


@pytest.mark.parametrize(
    "shape",
    [
        {"architecture": "text->text"},
        {"architecture": {"input_modalities": "text", "output_modalities": ["text"]}},
        {"architecture": {"input_modalities": ["text"], "output_modalities": [1]}},
    ],
)
def test_a_malformed_architecture_is_refused_and_nothing_changes(server, shape):
    server.serve(listing(listed_model("acme/text"), listed_model("acme/odd", **shape)))
    before = list(AIModel.objects.values())

    with pytest.raises(CommandError, match="acme/odd: architecture"):
        sync("--url", server.url)

    assert list(AIModel.objects.values()) == before


def test_the_seed_gives_gpt_4o_its_per_image_price():
    sync("--seed")

    gpt_4o = model("openai/gpt-4o")
    assert gpt_4o.price_image == D("0.003613")
    assert "vision" in gpt_4o.capabilities
    assert model("openai/gpt-4o-mini").price_image is None


def test_a_per_second_price_set_by_a_person_is_kept_by_the_sync_and_not_flagged(server):
    whisper = listed_model("openai/whisper-1", **architecture(["audio"], ["transcription"]))
    server.serve(listing(whisper))
    sync("--url", server.url)
    row = model("openai/whisper-1")
    row.price_audio_second = D("0.0001")  # no list publishes it: set in the admin
    row.save()

    out = sync("--url", server.url)

    assert model("openai/whisper-1").price_audio_second == D("0.0001")
    assert not model("openai/whisper-1").price_missing
    assert "openai/whisper-1" not in out
    assert "0 updated" in out
