"""The agent loop on a route that speaks the Responses API upstream (`Route.api`): the
same events, tool round trip, cost and stop reasons as on chat completions, against a
real local server."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from chat.models import ChatSession
from chat.runs import start_run
from controlplane.money import MoneySum
from routing.models import OperationLog, Route, UpstreamApi
from tests.chat.scripted_runs import (
    assert_gap_free,
    events_of,
    scripted_tools,  # noqa: F401  (a fixture)
    stop_reason_of,
    types_of,
)
from tests.routing import factories
from tests.routing.openai_server import Answer, Failure, OpenAIServer

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("scripted_tools")]


@pytest.fixture
def upstream(db: object) -> Iterator[OpenAIServer]:
    with OpenAIServer() as server:
        model = factories.model(factories.provider(server), "acme/new")
        Route.objects.filter(operation="agent").update(
            primary_model=model, api=UpstreamApi.RESPONSES
        )
        yield server


def test_a_run_calls_its_tool_and_answers_through_the_responses_api(
    operator, upstream: OpenAIServer, django_capture_on_commit_callbacks
) -> None:
    upstream.reply(
        Answer("", tool_calls=(("next_page", {}),)),
        Answer("Read the next page."),
    )
    session = ChatSession.objects.create(user=operator)

    with django_capture_on_commit_callbacks(execute=True):
        run = start_run(session, user=operator, message="Read on", mode="normal")

    run.refresh_from_db()
    assert (run.status, run.stop_reason, run.steps) == ("stopped", "completed", 2)
    assert run.tool_executions.get().tool == "next_page"
    assert "".join(e.data["text"] for e in events_of(run, "token")) == "Read the next page."
    assert types_of(run)[-1] == "stop_reason"
    assert_gap_free(run)
    assert {request.path for request in upstream.requests} == {"/v1/responses"}
    second_input = upstream.requests[1].json["input"]
    assert second_input[-2]["type"] == "function_call"
    assert second_input[-1]["type"] == "function_call_output"
    assert second_input[-1]["call_id"] == second_input[-2]["call_id"] == "call_test_0"
    logged = OperationLog.objects.filter(operation="agent").aggregate(total=MoneySum("cost"))
    assert logged["total"] == run.cost > Decimal(0)


def test_a_refusing_upstream_stops_the_run_with_a_provider_error(
    operator, upstream: OpenAIServer, django_capture_on_commit_callbacks
) -> None:
    upstream.reply(Failure(401, "bad key"))
    session = ChatSession.objects.create(user=operator)

    with django_capture_on_commit_callbacks(execute=True):
        run = start_run(session, user=operator, message="Read on", mode="normal")

    run.refresh_from_db()
    assert (run.status, run.stop_reason) == ("stopped", "provider_error")
    assert "HTTP 401" in run.last_error
    assert stop_reason_of(run)["reason"] == "provider_error"
