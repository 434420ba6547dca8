"""`POST /v1/audio/transcriptions`: OpenAI's transcription endpoint, on the gateway's
call path (`routing.calls.perform`) like chat: the same service keys, operation
(`X-Operation`, else the key's default), mode, kill switches, approvals, budgets and
OpenAI-style errors.

The upload is checked first (`transcription_requests`): a malformed form, a missing
`file` or `model`, a file whose header is no audio, an unknown `response_format`
are each a 400 naming the field, before anything is reserved (a body over
`GATEWAY_TRANSCRIPTION_MAX_BYTES` is a 413 from `gateway_asgi`). The call is a
transcription priced per second of audio: reserved at the length the file's header
gives, settled at the length the provider reports (Deepgram's `metadata.duration`,
an OpenAI upstream's `duration`), else the header's. A reported length far past the
header's is no length the audio sent could have: the header's is kept.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

from routing import calls
from routing.call_refusals import CallFailed, CallRefused
from routing.call_units import CallUnits
from routing.gateway import (
    GatewayRequest,
    GatewayResponse,
    authorised,
    invalid_request,
    refusal_response,
)
from routing.gateway_requests import InvalidRequest
from routing.models.catalog import CallKind
from routing.providers.base import Completion, ProviderError, Usage
from routing.providers.transcription import Transcript, TranscriptionRequest
from routing.snapshots import ModelChoice
from routing.transcription_formats import rendered
from routing.transcription_requests import parse_transcription_request

# The operation of a transcription without `X-Operation` (seeded with its route).
OPERATION = "transcribe"

# A provider's reported length is believed up to this many times the header's (plus
# a second): headers of variable-bitrate files are estimates, not this far off.
MOST_REPORTED_RATIO = Decimal(2)


def transcriptions(request: GatewayRequest) -> GatewayResponse:
    context = authorised(request, OPERATION)
    if isinstance(context, GatewayResponse):
        return context
    try:
        upload = parse_transcription_request(request.header("Content-Type"), request.body)
    except InvalidRequest as exc:
        return invalid_request(exc)
    units = CallUnits(
        CallKind.TRANSCRIPTION, audio_seconds=upload.seconds, fields={"audio_seconds": "file"}
    )
    transcripts: dict[int, Transcript] = {}

    def ask(client: Any, model: ModelChoice) -> Completion:
        transcribe = getattr(client, "transcribe", None)
        if transcribe is None:
            raise ProviderError(
                f"{model.provider_name}: the provider cannot transcribe audio",
                retryable=True,
                code="unsupported_call",
            )
        transcript: Transcript = transcribe(_for_model(upload, model))
        transcripts[model.pk] = transcript
        seconds = _priced_seconds(transcript, upload.seconds)
        return Completion(content=transcript.text, usage=Usage(audio_seconds=seconds))

    try:
        # The caller gets its answer first; the settlement and log row follow at once.
        result = calls.perform(context, units, ask, model_requested=upload.model, record_later=True)
    except (CallRefused, CallFailed) as exc:
        return refusal_response(exc, context)
    body, content_type = rendered(
        transcripts[result.model.pk], upload, result.completion.usage.audio_seconds
    )
    response = GatewayResponse(
        200,
        {
            "Content-Type": content_type,
            "X-Request-Id": context.request_id,
            "X-Model-Used": result.model.model_id,
            "X-Cost-USD": format(result.cost, "f"),
        },
        body,
    )
    response.after = result.record
    return response


def _for_model(upload: TranscriptionRequest, model: ModelChoice) -> TranscriptionRequest:
    """The request as the provider of `model` is to get it: its own model id."""
    return replace(upload, model=model.model_id)


def _priced_seconds(transcript: Transcript, header_seconds: Decimal) -> Decimal:
    """The provider's length of the audio when it is one the file could have, else
    the header's."""
    reported = transcript.seconds
    if (
        not isinstance(reported, Decimal)
        or not reported.is_finite()
        or not 0 < reported <= header_seconds * MOST_REPORTED_RATIO + 1
    ):
        return header_seconds
    return reported
