"""The endpoint Telegram POSTs a bot's updates to, when the integration takes them by
webhook (`/integrations/telegram/<id>/webhook/`).

Every request must carry the integration's generated secret in
`X-Telegram-Bot-Api-Secret-Token`: without it the answer is 401, with a wrong one
403, and the refusal is logged without the body (it may be anyone's text). A body
that is not JSON gets 400; any JSON is answered 200, handled or ignored, so that
Telegram does not resend an update the product will never handle.
"""

from __future__ import annotations

import hmac
import json
import logging

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from controlplane.middleware import client_address
from controlplane.models import Integration
from controlplane.telegram_integration import WEBHOOK_SECRET, client_for, uses_webhook
from controlplane.telegram_updates import handle_update

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105  (a header's name)


@csrf_exempt  # Telegram's request: authenticated by the secret header, not a session
@require_POST
def telegram_webhook(request: HttpRequest, integration_id: int) -> HttpResponse:
    given = request.headers.get(SECRET_HEADER, "")
    if not given:
        _refused(request, integration_id, "no secret token")
        return JsonResponse({"ok": False, "error": "The secret token is missing."}, status=401)
    integration = Integration.objects.filter(
        pk=integration_id, kind=Integration.Kind.TELEGRAM, enabled=True
    ).first()
    expected = integration.secrets.get(WEBHOOK_SECRET, "") if integration is not None else ""
    if (
        integration is None
        or not uses_webhook(integration)
        or not expected
        or not hmac.compare_digest(given.encode(), expected.encode())
    ):
        _refused(request, integration_id, "a wrong secret token, or no such webhook")
        return JsonResponse({"ok": False, "error": "The secret token is wrong."}, status=403)
    try:
        update = json.loads(request.body)
    except ValueError:  # UnicodeDecodeError included
        log.warning("Telegram webhook %s: a body that is not JSON was refused", integration_id)
        return JsonResponse({"ok": False, "error": "The body is not JSON."}, status=400)
    with client_for(integration) as client:
        outcome = handle_update(integration, update, client)
    return JsonResponse({"ok": True, "outcome": outcome})


def _refused(request: HttpRequest, integration_id: int, why: str) -> None:
    log.warning(
        "Telegram webhook %s: refused a request from %s: %s",
        integration_id,
        client_address(request),
        why,
    )
