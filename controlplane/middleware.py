from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from controlplane.audit import acting_as


def client_address(request: HttpRequest) -> str | None:
    # REMOTE_ADDR only: X-Forwarded-For is client-controlled unless a trusted proxy
    # rewrites it, and an audit trail must not record what the client claims.
    return request.META.get("REMOTE_ADDR") or None


class AuditContextMiddleware:
    """Attributes audit events written during a request to its user and address."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        with acting_as(getattr(request, "user", None), client_address(request)):
            return self.get_response(request)
