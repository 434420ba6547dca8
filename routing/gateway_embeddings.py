"""`POST /v1/embeddings`: OpenAI's embeddings through the gateway.

The same service keys, operations, modes, kill switches, approvals, budgets and
errors as chat completions (`routing.gateway`). Its operation is `X-Operation`, else
`embeddings` (a key's default operation is a chat's: its route's models would not
embed). The call is reserved at its inputs' estimated tokens at the prompt price of
the route's embedding model, settled at the tokens the provider reports (the
estimate when it reports none), and answered in OpenAI's shape, in the encoding asked
(`float`, or `base64` as the `openai` package asks by default).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from routing import calls
from routing.call_refusals import CallFailed, CallRefused
from routing.call_units import CallUnits
from routing.embedding_requests import parse_embedding_request
from routing.gateway import (
    GatewayRequest,
    GatewayResponse,
    authorised,
    error_response,
    invalid_request,
    json_response,
    refusal_response,
)
from routing.gateway_requests import InvalidRequest
from routing.models.catalog import CallKind
from routing.providers.base import Completion
from routing.providers.embeddings import EmbeddingRequest
from routing.snapshots import ModelChoice

OPERATION = "embeddings"
UNITS = CallUnits(CallKind.EMBEDDING)


def embeddings(request: GatewayRequest) -> GatewayResponse:
    context = authorised(request, OPERATION)
    if isinstance(context, GatewayResponse):
        return context
    try:
        wanted = parse_embedding_request(request.body)
    except InvalidRequest as exc:
        return invalid_request(exc)

    def ask(client: Any, model: ModelChoice) -> Completion:
        asked: EmbeddingRequest = replace(wanted, model=model.model_id)
        embedded = client.embed(asked)
        assert isinstance(embedded, Completion)
        return embedded

    try:
        result = calls.perform(
            context,
            UNITS,
            ask,
            prompt_tokens=wanted.prompt_tokens,
            model_requested=wanted.model,
            record_later=True,
        )
    except CallRefused as exc:
        return refusal_response(exc, context)
    except CallFailed as exc:
        return error_response(502, "upstream_error", str(exc), request_id=context.request_id)
    body = dict(result.completion.raw or {})
    usage = result.completion.usage
    reported = body.get("usage")
    body["usage"] = {
        **(reported if isinstance(reported, dict) else {}),
        "prompt_tokens": usage.prompt_tokens,
        "total_tokens": usage.prompt_tokens,
        "cost": result.cost,
    }
    response = json_response(
        body,
        {
            "X-Request-Id": context.request_id,
            "X-Model-Used": result.model.model_id,
            "X-Cost-USD": format(result.cost, "f"),
        },
    )
    response.after = result.record
    return response
