"""`POST /v1/responses`: OpenAI's Responses API through the gateway, so a service
written against it (OpenAI's Agents SDK uses it by default) routes its calls here by
changing only its base URL.

The same call as `/v1/chat/completions` (`routing.gateway`): the same service keys,
`X-Operation`, `X-Mode` and `X-Approval-Id`, kill switches, approvals, budgets,
routes with fallbacks, exact cost in the log and OpenAI-style errors. Only the
dialect differs: the request is checked and translated by `responses_requests`, the
answer (whole, or streamed as events) by `responses_answers`.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from typing import Any

from controlplane.money import dumps_built
from routing import calls
from routing.call_refusals import CallFailed, CallRefused, TooLong
from routing.gateway import (
    GatewayRequest,
    GatewayResponse,
    authorised,
    invalid_request,
    json_response,
    refusal_response,
)
from routing.gateway_requests import InvalidRequest
from routing.responses_answers import ResponseEvents, response_body
from routing.responses_requests import ResponsesCall, parse_responses_request

log = logging.getLogger(__name__)

GATEWAY_FAILED = "The gateway failed; the error is in its log."


def responses(request: GatewayRequest) -> GatewayResponse:
    context = authorised(request)
    if isinstance(context, GatewayResponse):
        return context
    try:
        call = parse_responses_request(request.body)
    except InvalidRequest as exc:
        return invalid_request(exc)
    arguments: dict[str, Any] = {
        "tools": call.tools,
        "max_tokens": call.max_tokens,
        "extra": call.extra,
        "model_requested": call.model_requested,
    }
    try:
        if call.streamed:
            streaming = calls.stream(context, call.messages, **arguments)
            return GatewayResponse(
                200,
                {
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-cache",
                    "X-Request-Id": context.request_id,
                },
                stream=_events(streaming, call, context.request_id),
                failed_stream_ending=FAILED_STREAM_ENDING,
            )
        # The caller gets its answer first; the settlement and log row follow at once.
        result = calls.complete(context, call.messages, record_later=True, **arguments)
    except (CallRefused, CallFailed) as exc:
        if isinstance(exc, TooLong):
            exc.details["param"] = "max_output_tokens"
        return refusal_response(exc, context)
    response = json_response(
        response_body(call, context.request_id, model=result.model.model_id, result=result),
        {
            "X-Request-Id": context.request_id,
            "X-Model-Used": result.model.model_id,
            "X-Cost-USD": format(result.cost, "f"),
        },
        write=dumps_built,
    )
    response.after = result.record
    return response


def _events(
    streaming: calls.StreamingCall, call: ResponsesCall, request_id: str
) -> Generator[bytes]:
    events = ResponseEvents(call, request_id, streaming.decision.model.model_id)
    try:
        yield from events.start()
        for item in streaming:
            if isinstance(item, calls.CallResult):
                yield from events.finish(item)
                break
            yield from events.add(item)
    except CallFailed as exc:
        # `server_error`: the code of OpenAI's list a client knows; the message says more.
        yield from events.fail("server_error", str(exc))
    except Exception as exc:
        # The call is recorded now, with this error; the client still gets an ending.
        log.exception("the responses stream of call %s failed", request_id)
        streaming.close(f"The gateway's stream failed: {type(exc).__name__}: {exc}")
        yield from events.fail("server_error", GATEWAY_FAILED)
    finally:
        # Closing this (a client went away) closes the call now, in this thread, so it
        # settles and logs; left to the garbage collector, that could wait forever.
        streaming.events.close()


# What ends a stream whose generator itself failed (`gateway_asgi`): an `error` event.
FAILED_STREAM_ENDING = (
    b"event: error\n"
    b'data: {"type": "error", "code": "server_error", "message": "The gateway failed; '
    b'the error is in its log.", "param": null, "sequence_number": 0}\n\n'
)
