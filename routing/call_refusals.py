"""How an AI call ends without an answer: refused before anything is spent
(`CallRefused` and its kinds, each with the HTTP status and OpenAI-style code the
gateway answers with), or failed on every model tried (`CallFailed`)."""

from __future__ import annotations

from typing import Any


class CallRefused(Exception):
    """Nothing was spent. `status` is the HTTP status the gateway answers with."""

    status = 400
    code = "refused"
    # OpenAI's error `type` for the answer, when it is not the code itself.
    error_type: str | None = None

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


class FeatureOff(CallRefused):
    status = 503
    code = "feature_off"


class ApprovalRequired(CallRefused):
    status = 403
    code = "approval_required"


class OverBudget(CallRefused):
    status = 429
    code = "budget_exceeded"


class NotRoutable(CallRefused):
    status = 404
    code = "not_routable"


class TooLong(CallRefused):
    """More completion tokens asked for than the route's models give."""

    status = 400
    code = "context_length_exceeded"
    error_type = "invalid_request_error"


class UnpricedPart(CallRefused):
    """A part of the request the call cannot be priced by: a unit (an image, audio or
    video part) no model of the route has a price for, or a file that cannot be
    measured. `param` names the part."""

    status = 400
    code = "invalid_value"
    error_type = "invalid_request_error"


class CallFailed(Exception):
    """Every model tried failed; the reservation was released."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
