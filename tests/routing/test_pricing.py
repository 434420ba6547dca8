from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from routing.models import AIModel, OperationLog, Provider
from routing.pricing import PriceMissing, cost_of, estimate_cost, estimate_prompt_tokens
from routing.providers.base import Usage

pytestmark = pytest.mark.django_db

D = Decimal


def make_model(
    model_id: str = "acme/sonnet", *, kind: str = "compatible", **prices: Any
) -> AIModel:
    provider, _ = Provider.objects.get_or_create(
        name=f"acme-{kind}", defaults={"kind": kind, "base_url": "http://127.0.0.1:9/v1"}
    )
    model = AIModel.objects.create(
        provider=provider,
        model_id=model_id,
        **{f"price_{name}": D(value) for name, value in prices.items()},
    )
    # Price what the database hands back (18 places), as every real call does.
    return AIModel.objects.select_related("provider").get(pk=model.pk)


def sonnet() -> AIModel:
    return make_model(
        prompt="0.000003", completion="0.000015", cache_read="0.0000003", cache_write="0.00000375"
    )


# cost_of: tokens times catalog prices


def test_prompt_and_completion_tokens_cost_their_catalog_prices_exactly():
    cost, source = cost_of(sonnet(), Usage(prompt_tokens=1234, completion_tokens=567))
    # 1,234 x 0.000003 + 567 x 0.000015 = 0.003702 + 0.008505
    assert cost == D("0.012207")
    assert source == OperationLog.CostSource.CATALOG
    assert isinstance(cost, Decimal)


def test_cached_prompt_tokens_are_charged_at_the_cache_read_price():
    cost, _ = cost_of(sonnet(), Usage(prompt_tokens=1234, cached_tokens=200))
    # 1,034 uncached x 0.000003 + 200 cached x 0.0000003 = 0.003102 + 0.00006
    assert cost == D("0.003162")


def test_cache_write_tokens_are_charged_at_the_cache_write_price():
    usage = Usage(prompt_tokens=1234, cached_tokens=200, cache_write_tokens=300)
    cost, _ = cost_of(sonnet(), usage)
    # 734 x 0.000003 + 200 x 0.0000003 + 300 x 0.00000375 = 0.002202 + 0.00006 + 0.001125
    assert cost == D("0.003387")


def test_cached_tokens_fall_back_to_the_prompt_price_when_no_cache_price_is_listed():
    model = make_model(prompt="0.00000002", completion="0.00000005")
    usage = Usage(prompt_tokens=1234, cached_tokens=200, cache_write_tokens=34)
    cost, _ = cost_of(model, usage)
    assert cost == 1234 * D("0.00000002") == D("0.00002468")


def test_a_small_model_with_a_cache_price_is_exact_to_the_last_digit():
    mini = make_model(
        "openai/gpt-4o-mini", prompt="0.00000015", completion="0.0000006", cache_read="0.000000075"
    )
    usage = Usage(prompt_tokens=1234, cached_tokens=200, completion_tokens=321)
    cost, _ = cost_of(mini, usage)
    # 1,034 x 0.00000015 + 200 x 0.000000075 + 321 x 0.0000006
    # = 0.0001551 + 0.000015 + 0.0001926
    assert cost == D("0.0003627")


def test_reasoning_tokens_are_charged_at_the_reasoning_price_when_it_is_listed():
    model = make_model(prompt="0.0000008", completion="0.000004", reasoning="0.00001")
    cost, _ = cost_of(model, Usage(completion_tokens=900, reasoning_tokens=600))
    # The 600 reasoning tokens are part of the 900: 300 x 0.000004 + 600 x 0.00001
    assert cost == D("0.0072")


def test_reasoning_tokens_are_completion_tokens_when_no_reasoning_price_is_listed():
    model = make_model(prompt="0.00000055", completion="0.00000219")
    usage = Usage(prompt_tokens=1234, completion_tokens=877, reasoning_tokens=500)
    cost, _ = cost_of(model, usage)
    # 1,234 x 0.00000055 + 877 x 0.00000219 = 0.0006787 + 0.00192063
    assert cost == D("0.00259933")


def test_the_per_request_price_is_added_once_per_call():
    model = make_model(prompt="0.000001", completion="0.000002", request="0.005")
    cost, _ = cost_of(model, Usage(prompt_tokens=10, completion_tokens=5))
    assert cost == D("0.00502")


def test_no_digit_is_rounded_away_however_small_the_price():
    model = make_model(prompt="0.000000000000000001", completion="0.000000000000000003")
    cost, _ = cost_of(model, Usage(prompt_tokens=7, completion_tokens=11))
    assert cost == D("0.000000000000000040")


def test_a_call_with_no_tokens_costs_nothing_but_its_request_price():
    model = make_model(prompt="0.000001", completion="0.000002", request="0.0001")
    assert cost_of(model, Usage()) == (D("0.0001"), OperationLog.CostSource.CATALOG)


def test_the_cost_fits_the_operation_log_to_the_last_digit():
    cost, source = cost_of(sonnet(), Usage(prompt_tokens=1234, cached_tokens=200))
    row = OperationLog.objects.create(
        request_id="r-1", operation="chat", cost=cost, cost_source=source, status="ok"
    )
    row.refresh_from_db()
    assert row.cost == D("0.003162")
    assert row.cost_source == "catalog"


# cost_of: other sources


def test_the_provider_reported_cost_wins_exactly_as_reported():
    usage = Usage(prompt_tokens=1234, completion_tokens=567, reported_cost=D("0.00123456789"))
    cost, source = cost_of(sonnet(), usage)
    assert cost == D("0.00123456789")
    assert str(cost) == "0.00123456789"
    assert source == OperationLog.CostSource.PROVIDER


def test_a_reported_cost_of_zero_is_still_the_providers_figure():
    usage = Usage(prompt_tokens=1234, completion_tokens=567, reported_cost=D("0"))
    assert cost_of(sonnet(), usage) == (D("0"), OperationLog.CostSource.PROVIDER)


def test_a_reported_cost_prices_even_a_model_without_catalog_prices():
    model = make_model()
    usage = Usage(prompt_tokens=10, reported_cost=D("0.0004"))
    assert cost_of(model, usage) == (D("0.0004"), OperationLog.CostSource.PROVIDER)


def test_the_offline_model_costs_zero():
    model = AIModel.objects.select_related("provider").get(model_id="offline/echo")
    cost, source = cost_of(model, Usage(prompt_tokens=5000, completion_tokens=5000))
    assert cost == 0
    assert source == OperationLog.CostSource.OFFLINE


def test_an_offline_model_without_prices_is_still_free():
    model = make_model("offline/other", kind="offline")
    assert cost_of(model, Usage(prompt_tokens=10))[1] == OperationLog.CostSource.OFFLINE


# A missing price is flagged, never zero


def test_a_model_missing_its_prompt_price_is_never_priced_at_zero():
    model = make_model(completion="0.000002")
    with pytest.raises(PriceMissing) as caught:
        cost_of(model, Usage(prompt_tokens=100, completion_tokens=10))
    assert caught.value.missing == ("price_prompt",)
    assert caught.value.model_id == "acme/sonnet"
    assert "acme/sonnet has no prompt price" in str(caught.value)
    assert caught.value.source == OperationLog.CostSource.UNPRICED


def test_a_model_with_no_prices_names_both_missing_prices():
    with pytest.raises(PriceMissing, match="no prompt and completion price"):
        cost_of(make_model(), Usage(prompt_tokens=1, completion_tokens=1))


def test_a_model_missing_a_price_raises_even_for_a_call_without_tokens():
    with pytest.raises(PriceMissing):
        cost_of(make_model(prompt="0.000001"), Usage())


def test_cost_of_prices_a_routing_snapshot_like_the_model_itself():
    from routing.snapshots import ModelChoice

    model = sonnet()
    usage = Usage(prompt_tokens=1234, cached_tokens=200, cache_write_tokens=300)
    assert cost_of(ModelChoice.of(model), usage) == cost_of(model, usage)
    with pytest.raises(PriceMissing):
        cost_of(ModelChoice.of(make_model("acme/unpriced")), usage)


# estimate_cost


def test_the_estimate_is_prompt_and_completion_at_their_prices_plus_the_request_price():
    model = make_model(prompt="0.000003", completion="0.000015", request="0.001")
    # 1,000 x 0.000003 + 500 x 0.000015 + 0.001
    assert estimate_cost(model, 1000, 500) == D("0.0115")


def test_the_estimate_charges_completion_at_the_dearer_of_completion_and_reasoning():
    model = make_model(prompt="0.0000008", completion="0.000004", reasoning="0.00001")
    assert estimate_cost(model, 1000, 500) == D("0.0008") + D("0.005")


def test_the_estimate_is_never_below_the_catalog_cost_of_the_same_tokens():
    model = make_model(
        prompt="0.0000008", completion="0.000004", cache_read="0.00000008", reasoning="0.00001"
    )
    usage = Usage(
        prompt_tokens=1234, cached_tokens=200, completion_tokens=900, reasoning_tokens=600
    )
    assert estimate_cost(model, 1234, 900) >= cost_of(model, usage)[0]


def test_the_estimate_for_the_offline_model_is_zero():
    model = AIModel.objects.select_related("provider").get(model_id="offline/echo")
    assert estimate_cost(model, 10_000, 10_000) == 0


def test_the_estimate_for_a_model_missing_a_price_raises():
    with pytest.raises(PriceMissing, match="no completion price"):
        estimate_cost(make_model(prompt="0.000001"), 100, 100)


# estimate_prompt_tokens


def test_prompt_tokens_are_about_four_characters_each_plus_overhead():
    # 3 for the reply + 4 for the message + (4 characters of "user" + 400) / 4
    assert estimate_prompt_tokens([{"role": "user", "content": "x" * 400}]) == 108


def test_the_prompt_estimate_grows_with_the_text_and_the_messages():
    one = [{"role": "user", "content": "Summarise the error log of the payments service."}]
    two = [*one, {"role": "assistant", "content": "The payments service failed 12 times."}]
    assert estimate_prompt_tokens([]) == 3
    assert estimate_prompt_tokens(one) < estimate_prompt_tokens(two)
    assert estimate_prompt_tokens(two) == estimate_prompt_tokens(list(two))


def test_the_prompt_estimate_counts_text_parts_images_tool_calls_and_tools():
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 9000}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "function": {"name": "lookup", "arguments": '{"q": "cat"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "A cat."},
    ]
    base = estimate_prompt_tokens(messages)
    # The image is a flat 85 tokens, however long its data URL.
    assert base < 3 + 3 * 4 + 85 + 30
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    assert estimate_prompt_tokens(messages, tools) > base


def test_the_prompt_estimate_tolerates_odd_messages():
    odd: list[Any] = [{"role": "user", "content": {"unexpected": True}}, {"role": "user"}]
    assert estimate_prompt_tokens(odd) > 3
