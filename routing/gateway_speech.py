"""`POST /v1/audio/speech`: text in, audio out, through the gateway.

The same service keys, operations, modes, kill switches, approvals, budgets and
errors as chat completions (`routing.gateway`). Its operation is `X-Operation`, else
`speech`. The call is reserved and priced at its input's characters times the route's
speech model's character price. The audio is streamed on as the provider sends it,
with its media type; the call settles and logs once the stream ends, or at once when
the client goes away mid-stream (the audio was made, and is paid for). A provider
failure after the audio started can only end the body early: the call's log row
records it (`X-Request-Id` names the row). An answer the provider sent whole and
small (`routing.providers.speech.WHOLE_BYTES`) is answered in one piece, as chat is:
the call settles and logs once it is sent.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator
from dataclasses import replace
from typing import Any

from routing import calls
from routing.call_refusals import CallFailed, CallRefused
from routing.call_units import CallUnits
from routing.gateway import (
    GatewayRequest,
    GatewayResponse,
    authorised,
    error_response,
    invalid_request,
    refusal_response,
)
from routing.gateway_requests import InvalidRequest
from routing.models.catalog import CallKind
from routing.providers.base import Completion
from routing.providers.speech import SpeechRequest, SpokenAudio
from routing.snapshots import ModelChoice
from routing.speech_requests import parse_speech_request

log = logging.getLogger(__name__)

OPERATION = "speech"


def speech(request: GatewayRequest) -> GatewayResponse:
    context = authorised(request, OPERATION)
    if isinstance(context, GatewayResponse):
        return context
    try:
        wanted = parse_speech_request(request.body)
    except InvalidRequest as exc:
        return invalid_request(exc)
    units = CallUnits(CallKind.SPEECH, characters=len(wanted.input), fields={"characters": "input"})

    def ask(client: Any, model: ModelChoice) -> Completion:
        asked: SpeechRequest = replace(wanted, model=model.model_id)
        spoken = client.speak(asked)
        assert isinstance(spoken, SpokenAudio)
        return spoken

    try:
        result = calls.perform(context, units, ask, model_requested=wanted.model, record_later=True)
    except CallRefused as exc:
        return refusal_response(exc, context)
    except CallFailed as exc:
        return error_response(502, "upstream_error", str(exc), request_id=context.request_id)
    audio = Speaking(result, context.request_id)
    headers = {
        "Content-Type": audio.media_type,
        "X-Request-Id": context.request_id,
        "X-Model-Used": result.model.model_id,
        "X-Cost-USD": format(result.cost, "f"),
    }
    if audio.whole is not None:
        # All of it is here: answered as chat is, the record once it is sent.
        return GatewayResponse(200, headers, audio.whole, after=audio.finish)
    return GatewayResponse(
        200,
        headers,
        stream=audio.stream(),
        # Should the stream never start (the client left before the answer did), the
        # upstream's answer is still closed and the call recorded.
        after=audio.finish,
    )


class Speaking:
    """A spoken answer on its way to the caller: its chunks, then its record."""

    def __init__(self, result: calls.CallResult, request_id: str) -> None:
        spoken = result.completion
        assert isinstance(spoken, SpokenAudio)
        self.result = result
        self.request_id = request_id
        self.media_type = spoken.media_type
        self.whole = spoken.whole
        self.chunks: Iterator[bytes] = spoken.chunks
        self.release = spoken.close

    def stream(self) -> Generator[bytes]:
        """The audio's chunks. Failed, or closed because the client went away: the
        call is recorded at once, with what went wrong. Run to its end: recorded by
        the response's `after` (`finish`), once the end is sent."""
        try:
            for chunk in self.chunks:
                if chunk:
                    yield chunk
        except GeneratorExit:
            self.finish("client disconnected mid-stream")
            raise
        except Exception as exc:
            log.warning("the audio of call %s stopped: %s", self.request_id, exc)
            self.finish(f"The audio stopped mid-stream: {exc}")

    def finish(self, problem: str = "") -> None:
        """Let go of the upstream's answer and record the call (once: the first
        problem told is the one recorded)."""
        close = getattr(self.chunks, "close", None)
        if close is not None:
            close()
        self.release()
        self.result.record(problem)
