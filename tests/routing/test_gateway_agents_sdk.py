"""OpenAI's Agents SDK (`openai-agents`) runs an agent with a function tool through the
gateway, unchanged: its default model speaks the Responses API (`/v1/responses`), here
to a live daphne whose route answers with the offline model (it calls the tool the
question names, then answers with the tool's result). Tracing is off, so nothing
leaves the machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

from routing.models import OperationLog
from tests.controlplane.test_background import wait_for
from tests.routing.test_gateway_openai_client import _seeded, raw_key  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db(transaction=True)

ASKED: list[str] = []  # the cities the tool was asked about


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    ASKED.append(city)
    return f"Sunny and 22 C in {city}"


@pytest.fixture
def model(live_server_url: str, raw_key: str) -> Iterator[OpenAIResponsesModel]:  # noqa: F811
    set_tracing_disabled(True)
    ASKED.clear()
    answered: list[str] = []

    async def note(response: httpx.Response) -> None:
        if request_id := response.headers.get("x-request-id"):
            answered.append(request_id)

    client = AsyncOpenAI(
        base_url=f"{live_server_url}/v1",
        api_key=raw_key,
        max_retries=0,
        http_client=httpx.AsyncClient(event_hooks={"response": [note]}, timeout=30),
    )
    yield OpenAIResponsesModel(model="offline/echo", openai_client=client)
    # Each row is written just after its answer: wait for them, so that none lands in
    # the next test's (flushed) database.
    wait_for(lambda: OperationLog.objects.filter(request_id__in=answered).count() == len(answered))


def weather_agent(model: OpenAIResponsesModel) -> Agent:
    return Agent(
        name="Weather desk",
        instructions="Answer questions about the weather with the tool.",
        model=model,
        tools=[get_weather],
        model_settings=ModelSettings(max_tokens=200),
    )


QUESTION = "Please use get_weather for Paris"


def test_an_agent_calls_its_tool_and_answers_through_the_gateway(
    model: OpenAIResponsesModel,
) -> None:
    result = Runner.run_sync(weather_agent(model), QUESTION)

    assert ASKED
    assert result.final_output.startswith("The get_weather tool returned: Sunny and 22 C in")
    wait_for(lambda: OperationLog.objects.count() == 2)
    rows = OperationLog.objects.order_by("id")
    assert [(row.operation, row.status, row.stream) for row in rows] == [
        ("chat", "ok", False),
        ("chat", "ok", False),
    ]
    assert {row.service for row in rows} == {"billing"}


def test_a_streamed_agent_run_through_the_gateway(model: OpenAIResponsesModel) -> None:
    async def run() -> tuple[str, list[str]]:
        streamed = Runner.run_streamed(weather_agent(model), QUESTION)
        kinds = [event.type async for event in streamed.stream_events()]
        return str(streamed.final_output), kinds

    final_output, kinds = asyncio.run(run())

    assert ASKED
    assert final_output.startswith("The get_weather tool returned: Sunny and 22 C in")
    assert "raw_response_event" in kinds
    wait_for(lambda: OperationLog.objects.count() == 2)
    assert list(OperationLog.objects.values_list("status", "stream")) == [("ok", True)] * 2
