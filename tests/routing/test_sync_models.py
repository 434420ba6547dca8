from __future__ import annotations

import json
from decimal import Decimal
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.core.management.base import CommandError

from controlplane.models import AuditEvent
from routing.catalog import CatalogError, parse_price
from routing.models import AIModel, Provider
from tests.local_servers import closed_port
from tests.routing.catalog_server import ModelListServer, listed_model, listing

pytestmark = pytest.mark.django_db

D = Decimal
SEEDED_OPENROUTER = {
    "anthropic/claude-3.5-haiku",
    "anthropic/claude-3.5-sonnet",
    "deepseek/deepseek-r1",
    "google/gemini-2.0-flash-001",
    "meta-llama/llama-3.1-8b-instruct",
    "mistralai/mistral-small",
    "openai/gpt-4o",
    "openai/gpt-4o-mini",
}


def sync(*args: str) -> str:
    out = StringIO()
    call_command("sync_models", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def openrouter_models() -> dict[str, AIModel]:
    return {m.model_id: m for m in AIModel.objects.filter(provider__name="openrouter")}


def catalog_state() -> list[dict[str, Any]]:
    return list(AIModel.objects.order_by("pk").values())


def model_events(action: str) -> Any:
    return AuditEvent.objects.filter(
        content_type=ContentType.objects.get_for_model(AIModel), action=action
    )


def gpt_4o_mini(**fields: Any) -> dict[str, Any]:
    """gpt-4o-mini as OpenRouter lists it, with the seed's prices unless told."""
    fields.setdefault("pricing", {"input_cache_read": "0.000000075"})
    prompt = fields.pop("prompt", "0.00000015")
    completion = fields.pop("completion", "0.0000006")
    return listed_model(
        "openai/gpt-4o-mini", prompt, completion, name="OpenAI: GPT-4o-mini", **fields
    )


def seeded_as_listed() -> list[dict[str, Any]]:
    """Every seeded OpenRouter model, listed with exactly its seed values."""
    seed = json.loads((Path(__file__).parents[2] / "routing" / "seed_catalog.json").read_text())
    return [
        {
            "id": row["model_id"],
            "name": row["name"],
            "context_length": row["context_length"],
            "pricing": row["prices"],
            "supported_parameters": ["tools"] if row["supports_tools"] else [],
            **({"architecture": row["architecture"]} if "architecture" in row else {}),
        }
        for row in seed["models"]
        if row["provider"] == "openrouter"
    ]


@pytest.fixture
def server() -> Any:
    with ModelListServer(listing(*seeded_as_listed())) as running:
        yield running


# Adding, updating, deactivating


def test_a_list_matching_the_catalog_changes_nothing_and_audits_nothing(server):
    before = catalog_state()
    events = AuditEvent.objects.count()
    out = sync("--url", server.url)
    assert "openrouter: 0 added, 0 updated, 0 deactivated, 8 unchanged" in out
    assert catalog_state() == before
    assert AuditEvent.objects.count() == events
    assert server.requests == ["/api/v1/models"]


def test_a_new_model_is_added_with_its_exact_string_prices(server):
    server.serve(
        listing(
            *seeded_as_listed(),
            listed_model(
                "x-ai/grok-3-mini",
                "0.0000003",
                "0.0000005",
                name="xAI: Grok 3 Mini",
                context_length=131072,
                parameters=("tools", "reasoning", "structured_outputs"),
                pricing={"input_cache_read": "0.000000075", "internal_reasoning": "0.0000005"},
            ),
        )
    )
    out = sync("--url", server.url)
    assert "1 added, 0 updated, 0 deactivated, 8 unchanged" in out
    assert "  + x-ai/grok-3-mini" in out.splitlines()
    grok = openrouter_models()["x-ai/grok-3-mini"]
    assert grok.name == "xAI: Grok 3 Mini"
    assert grok.context_length == 131072
    assert grok.price_prompt == D("0.0000003")
    assert grok.price_completion == D("0.0000005")
    assert grok.price_cache_read == D("0.000000075")
    assert grok.price_cache_write is None
    assert grok.price_reasoning == D("0.0000005")
    assert grok.price_request == D("0")
    assert grok.supports_tools is True
    assert grok.capabilities == ["reasoning", "structured_outputs", "tools"]
    assert grok.active is True
    assert grok.source == AIModel.Source.OPENROUTER


def test_changed_prices_context_and_tools_are_updated_and_reported_before_and_after(server):
    models = [m for m in seeded_as_listed() if m["id"] != "openai/gpt-4o-mini"]
    server.serve(
        listing(
            *models,
            gpt_4o_mini(prompt="0.0000002", context_length=256000, parameters=("temperature",)),
        )
    )
    out = sync("--url", server.url)
    assert "0 added, 1 updated, 0 deactivated, 7 unchanged" in out
    assert (
        "  ~ openai/gpt-4o-mini: context_length 128000 -> 256000; "
        "price_prompt 0.00000015 -> 0.0000002; price_request unknown -> 0; "
        "supports_tools True -> False; capabilities [tools] -> []"
    ) in out.splitlines()
    mini = openrouter_models()["openai/gpt-4o-mini"]
    assert mini.price_prompt == D("0.0000002")
    assert mini.price_completion == D("0.0000006")
    assert mini.context_length == 256000
    assert mini.supports_tools is False
    assert mini.capabilities == []
    assert mini.source == AIModel.Source.OPENROUTER


def test_a_model_gone_from_the_list_is_made_inactive_never_deleted(server):
    server.serve(listing(*[m for m in seeded_as_listed() if m["id"] != "openai/gpt-4o"]))
    out = sync("--url", server.url)
    assert "0 added, 0 updated, 1 deactivated, 7 unchanged" in out
    assert "  - openai/gpt-4o (inactive)" in out.splitlines()
    gone = openrouter_models()["openai/gpt-4o"]
    assert gone.active is False
    assert gone.price_prompt == D("0.0000025")
    # Run again: an inactive model stays inactive and is not reported twice.
    assert "0 deactivated, 7 unchanged" in sync("--url", server.url)


def test_a_model_back_in_the_list_is_active_again(server):
    AIModel.objects.filter(model_id="openai/gpt-4o").update(active=False)
    out = sync("--url", server.url)
    assert "  ~ openai/gpt-4o: active False -> True" in out.splitlines()
    assert openrouter_models()["openai/gpt-4o"].active is True


def test_other_providers_models_are_left_alone(server):
    server.serve(listing(listed_model("openai/gpt-5")))
    sync("--url", server.url)
    echo = AIModel.objects.get(model_id="offline/echo")
    assert echo.active is True
    assert set(openrouter_models()) == {*SEEDED_OPENROUTER, "openai/gpt-5"}
    assert [m for m, model in openrouter_models().items() if model.active] == ["openai/gpt-5"]


def test_the_openrouter_provider_is_created_when_missing(server):
    AIModel.objects.filter(provider__name="openrouter").delete()
    Provider.objects.filter(name="openrouter").delete()
    out = sync("--url", server.url)
    assert "8 added" in out
    assert "  + provider openrouter" in out.splitlines()
    provider = Provider.objects.get(name="openrouter")
    assert provider.kind == Provider.Kind.OPENROUTER
    assert provider.base_url == "https://openrouter.ai/api/v1"
    assert set(openrouter_models()) == SEEDED_OPENROUTER


def test_the_urls_default_to_the_settings(server, settings):
    settings.OPENROUTER_MODELS_URL = server.url
    settings.OPENROUTER_EMBEDDING_MODELS_URL = server.embeddings_url
    server.serve_embeddings(listing(listed_model("openai/text-embedding-3-small", "0.00000002")))
    sync()
    assert server.requests == ["/api/v1/models", "/api/v1/embeddings/models"]


# Unknown prices


def test_a_price_of_minus_one_or_a_missing_price_is_unknown_and_flagged(server):
    server.serve(
        listing(
            *seeded_as_listed(),
            listed_model("openrouter/auto", "-1", "-1", pricing={"request": "-1"}),
            listed_model("acme/half-priced", "0.000001", None),
            listed_model("acme/blank", "", " "),
        )
    )
    out = sync("--url", server.url)
    assert "3 added, 0 updated, 0 deactivated, 8 unchanged, 3 flagged for a missing price" in out
    lines = out.splitlines()
    assert (
        "  ! openrouter/auto: no prompt, completion price (flagged, never priced at zero)" in lines
    )
    assert "  ! acme/half-priced: no completion price (flagged, never priced at zero)" in lines
    models = openrouter_models()
    auto = models["openrouter/auto"]
    assert (auto.price_prompt, auto.price_completion, auto.price_request) == (None, None, None)
    assert auto.price_missing is True
    half = models["acme/half-priced"]
    assert half.price_prompt == D("0.000001")
    assert half.price_completion is None
    assert half.price_missing is True
    assert models["acme/blank"].price_missing is True


def test_a_free_model_is_priced_at_zero_because_the_list_says_zero(server):
    server.serve(listing(*seeded_as_listed(), listed_model("acme/free", "0", "0")))
    out = sync("--url", server.url)
    assert "0 flagged" in out
    free = openrouter_models()["acme/free"]
    assert (free.price_prompt, free.price_completion, free.price_missing) == (0, 0, False)


def test_a_known_price_that_becomes_unknown_is_reported_and_flagged(server):
    models = [m for m in seeded_as_listed() if m["id"] != "openai/gpt-4o-mini"]
    server.serve(listing(*models, gpt_4o_mini(completion="-1")))
    out = sync("--url", server.url)
    assert "price_completion 0.0000006 -> unknown" in out
    assert "1 flagged for a missing price" in out
    assert openrouter_models()["openai/gpt-4o-mini"].price_completion is None


def test_a_model_as_openrouter_really_lists_it_is_read_in_full(server):
    listed = {
        "id": "google/gemini-2.5-pro",
        "canonical_slug": "google/gemini-2.5-pro",
        "name": "Google: Gemini 2.5 Pro",
        "created": 1750169544,
        "context_length": None,
        "architecture": {
            "modality": "text+image->text",
            "input_modalities": ["file", "image", "text"],
            "output_modalities": ["text"],
            "tokenizer": "Gemini",
            "instruct_type": None,
        },
        "pricing": {
            "prompt": "0.00000125",
            "completion": "0.00001",
            "request": "0",
            "image": "0.00516",
            "web_search": "0",
            "internal_reasoning": "0",
            "input_cache_read": "0.00000031",
            "input_cache_write": "0.000001625",
            "discount": 0,
            "overrides": [{"min_prompt_tokens": 200000, "prompt": "0.0000025"}],
        },
        "top_provider": {"context_length": 1048576, "max_completion_tokens": 65536},
        "per_request_limits": None,
        "supported_parameters": ["include_reasoning", "reasoning", "tools", "tool_choice"],
    }
    server.serve(listing(*seeded_as_listed(), listed))
    sync("--url", server.url)
    gemini = openrouter_models()["google/gemini-2.5-pro"]
    assert gemini.context_length == 1048576
    assert gemini.price_prompt == D("0.00000125")
    assert gemini.price_completion == D("0.00001")
    assert gemini.price_cache_read == D("0.00000031")
    assert gemini.price_cache_write == D("0.000001625")
    assert gemini.price_request == D("0")
    assert gemini.capabilities == ["reasoning", "tools", "vision"]
    # "internal_reasoning": "0" means no separate price: reasoning is billed as
    # completion, so it is left unlisted rather than made free.
    assert gemini.price_reasoning is None


def test_a_zero_cache_or_reasoning_price_beside_a_real_base_price_is_not_free(server):
    server.serve(
        listing(
            *seeded_as_listed(),
            listed_model(
                "acme/thinker",
                "0.000002",
                "0.000008",
                pricing={
                    "input_cache_read": "0",
                    "input_cache_write": "0",
                    "internal_reasoning": "0",
                },
            ),
            listed_model(
                "acme/free-thinker",
                "0",
                "0",
                pricing={"input_cache_read": "0", "internal_reasoning": "0"},
            ),
        )
    )
    sync("--url", server.url)
    models = openrouter_models()
    thinker = models["acme/thinker"]
    assert (thinker.price_cache_read, thinker.price_cache_write, thinker.price_reasoning) == (
        None,
        None,
        None,
    )
    free = models["acme/free-thinker"]
    assert (free.price_cache_read, free.price_reasoning) == (D("0"), D("0"))


def test_prices_are_parsed_exactly_from_strings():
    assert parse_price("0.000000075") == D("0.000000075")
    assert parse_price("0.0000025") == D("0.0000025")
    assert parse_price(D("0.0000006")) == D("0.0000006")
    assert parse_price(0) == D("0")
    assert parse_price("-1") is None
    assert parse_price("") is None
    assert parse_price(None) is None
    for bad in ("abc", "NaN", "Infinity", "0.0000000000000000001", "1e20", True, [1]):
        with pytest.raises(CatalogError):
            parse_price(bad, model_id="acme/x", key="prompt")


# Dry run, file, seed


def test_a_dry_run_reports_every_change_and_writes_nothing(server):
    models = [
        m for m in seeded_as_listed() if m["id"] not in {"openai/gpt-4o-mini", "openai/gpt-4o"}
    ]
    server.serve(listing(*models, gpt_4o_mini(prompt="0.0000002"), listed_model("openai/gpt-5")))
    before = catalog_state()
    events = AuditEvent.objects.count()
    out = sync("--url", server.url, "--dry-run")
    assert "openrouter (dry run): 1 added, 1 updated, 1 deactivated, 6 unchanged" in out
    lines = out.splitlines()
    assert "  + openai/gpt-5" in lines
    assert "  - openai/gpt-4o (inactive)" in lines
    assert any(line.startswith("  ~ openai/gpt-4o-mini: price_prompt") for line in lines)
    assert lines[-1] == "Dry run: nothing was changed."
    assert catalog_state() == before
    assert AuditEvent.objects.count() == events


def test_a_dry_run_without_the_provider_creates_nothing(server):
    AIModel.objects.filter(provider__name="openrouter").delete()
    Provider.objects.filter(name="openrouter").delete()
    out = sync("--url", server.url, "--dry-run")
    assert "  + provider openrouter" in out.splitlines()
    assert "8 added" in out
    assert not Provider.objects.filter(name="openrouter").exists()


def test_a_saved_list_is_loaded_from_a_file_without_the_network(tmp_path):
    saved = tmp_path / "models.json"
    saved.write_text(json.dumps(listing(*seeded_as_listed(), listed_model("openai/gpt-5"))))
    out = sync("--file", str(saved))
    assert "1 added, 0 updated, 0 deactivated, 8 unchanged" in out
    assert "openai/gpt-5" in openrouter_models()


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match=r"Could not read .*nowhere\.json"):
        sync("--file", str(tmp_path / "nowhere.json"))


def test_the_seed_restores_seed_models_and_prices_without_the_network():
    AIModel.objects.filter(model_id="mistralai/mistral-small").delete()
    AIModel.objects.filter(model_id="openai/gpt-4o").update(price_prompt=D("0.000009"))
    out = sync("--seed")
    assert "offline: 0 added, 0 updated, 0 deactivated, 1 unchanged" in out
    assert "openrouter: 1 added, 1 updated, 0 deactivated, 6 unchanged" in out
    assert "  ~ openai/gpt-4o: price_prompt 0.000009 -> 0.0000025" in out.splitlines()
    models = openrouter_models()
    assert models["mistralai/mistral-small"].price_completion == D("0.0000006")
    assert models["mistralai/mistral-small"].source == AIModel.Source.SEED
    assert models["openai/gpt-4o"].price_prompt == D("0.0000025")


def test_the_seed_never_deactivates_models_it_does_not_list(server):
    server.serve(listing(*seeded_as_listed(), listed_model("openai/gpt-5")))
    sync("--url", server.url)
    out = sync("--seed")
    assert "0 deactivated" in out
    assert openrouter_models()["openai/gpt-5"].active is True


def test_the_seed_never_reactivates_a_model_the_sync_found_gone(server):
    server.serve(listing(*[m for m in seeded_as_listed() if m["id"] != "openai/gpt-4o"]))
    sync("--url", server.url)
    out = sync("--seed")
    assert "openrouter: 0 added, 0 updated, 0 deactivated, 8 unchanged" in out
    assert openrouter_models()["openai/gpt-4o"].active is False


def test_the_seed_loads_an_empty_catalog_from_scratch():
    AIModel.objects.filter(provider__name="openrouter").delete()
    Provider.objects.filter(name="openrouter").delete()
    sync("--seed")
    assert set(openrouter_models()) == SEEDED_OPENROUTER
    sonnet = openrouter_models()["anthropic/claude-3.5-sonnet"]
    assert sonnet.price_cache_write == D("0.00000375")
    assert Provider.objects.get(name="openrouter").kind == Provider.Kind.OPENROUTER


def test_sources_are_exclusive():
    with pytest.raises(CommandError):
        sync("--seed", "--file", "models.json")


# Failures leave the catalog untouched


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (500, {"error": "upstream"}, "HTTP 500"),
        (200, b"<html>Bad gateway</html>", "not valid JSON"),
        (200, b'{"data": [', "not valid JSON"),
        (200, {"models": []}, 'not of the form {"data": [...]}'),
        (200, {"data": []}, "refusing to deactivate every model"),
    ],
)
def test_a_bad_answer_leaves_the_catalog_untouched_with_a_clear_error(
    server, status, body, message
):
    server.serve(body, status=status)
    before = catalog_state()
    events = AuditEvent.objects.count()
    with pytest.raises(CommandError, match="The catalog was not changed") as caught:
        sync("--url", server.url)
    assert message in str(caught.value)
    assert catalog_state() == before
    assert AuditEvent.objects.count() == events


def test_a_bad_price_late_in_the_list_writes_none_of_the_models_before_it(server):
    server.serve(
        listing(
            listed_model("acme/first"),
            gpt_4o_mini(prompt="0.0000009"),
            listed_model("acme/broken", "a dollar", "0.000002"),
        )
    )
    before = catalog_state()
    with pytest.raises(CommandError, match="Model acme/broken: price 'prompt' is not a number"):
        sync("--url", server.url)
    assert catalog_state() == before


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"name": "no id"}, "Model #1 of the list has no id"),
        ("openai/gpt-5", "Model #1 of the list is not an object"),
        ({"id": "acme/x", "pricing": "free"}, "pricing is not an object"),
        ({"id": "acme/x", "context_length": "long"}, "context_length is not a whole number"),
        ({"id": "acme/x", "context_length": -5}, "out of range"),
        ({"id": "acme/x", "supported_parameters": "tools"}, "supported_parameters is not a list"),
    ],
)
def test_a_malformed_model_is_a_clear_error(server, row, message):
    server.serve(listing(row))
    with pytest.raises(CommandError, match=message):
        sync("--url", server.url)


def test_a_model_listed_twice_is_an_error(server):
    server.serve(listing(listed_model("acme/x"), listed_model("acme/x", "0.000003")))
    with pytest.raises(CommandError, match="acme/x is listed twice"):
        sync("--url", server.url)


def test_an_unreachable_server_is_a_clear_error():
    before = catalog_state()
    url = f"http://127.0.0.1:{closed_port()}/api/v1/models"
    with pytest.raises(CommandError, match="Could not load the model list from http://127"):
        sync("--url", url)
    assert catalog_state() == before


def test_a_server_slower_than_the_timeout_is_a_clear_error(server):
    server.delay = 1.0
    before = catalog_state()
    with pytest.raises(CommandError, match="Could not load the model list"):
        sync("--url", server.url, "--timeout", "0.2")
    assert catalog_state() == before


# Audit


def test_every_change_of_a_sync_is_audited_as_the_system(server):
    models = [
        m for m in seeded_as_listed() if m["id"] not in {"openai/gpt-4o-mini", "openai/gpt-4o"}
    ]
    server.serve(listing(*models, gpt_4o_mini(prompt="0.0000002"), listed_model("openai/gpt-5")))
    sync("--url", server.url)
    added = model_events("aimodel.created").get(object_repr__startswith="openai/gpt-5")
    assert added.actor is None
    assert added.actor_label == "system"
    assert added.after["price_prompt"] is not None
    assert D(added.after["price_prompt"]) == D("0.000001")
    mini = openrouter_models()["openai/gpt-4o-mini"]
    changed = model_events("aimodel.changed").get(object_id=str(mini.pk))
    assert changed.actor_label == "system"
    # Only what changed is in the event: the prompt price, the request price, the source.
    assert set(changed.before) == {"price_prompt", "price_request", "source", "updated_at"}
    assert D(changed.before["price_prompt"]) == D("0.00000015")
    assert D(changed.after["price_prompt"]) == D("0.0000002")
    assert changed.before["source"] == "seed"
    assert changed.after["source"] == "openrouter"
    gpt_4o = openrouter_models()["openai/gpt-4o"]
    deactivated = model_events("aimodel.changed").get(object_id=str(gpt_4o.pk))
    assert deactivated.before["active"] is True
    assert deactivated.after["active"] is False
