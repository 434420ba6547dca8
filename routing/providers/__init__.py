"""The clients that talk to models: `provider_for(provider)` picks one by the catalog
provider's kind.

Every kind but `offline` and `deepgram` speaks OpenAI-compatible chat completions over
HTTP (`OpenAICompatibleProvider`); `offline` is the deterministic, free
`OfflineProvider`; `deepgram` transcribes audio through Deepgram's own API
(`DeepgramProvider`, its base URL Deepgram's unless the provider sets one).
Clients are kept per catalog provider so their connection pools are reused; a change
of base URL, key or timeout gets a new one.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from django.conf import settings

from routing.providers import deepgram
from routing.providers.base import (
    ChatProvider,
    ChatRequest,
    Completion,
    ProviderError,
    StreamChunk,
    ToolCall,
    Usage,
)
from routing.providers.deepgram import DeepgramProvider
from routing.providers.offline import CallTool, OfflineProvider, Reply
from routing.providers.openai_compat import OpenAICompatibleProvider

if TYPE_CHECKING:
    from routing.models import Provider

__all__ = [
    "CallTool",
    "ChatProvider",
    "ChatRequest",
    "Completion",
    "DeepgramProvider",
    "OfflineProvider",
    "OpenAICompatibleProvider",
    "ProviderError",
    "Reply",
    "StreamChunk",
    "ToolCall",
    "Usage",
    "provider_for",
]

APP_TITLE = "Control plane"

_offline = OfflineProvider()
_clients: dict[object, tuple[tuple[object, ...], ChatProvider]] = {}
# Kinds whose provider has a base URL of its own when the catalog gives none.
DEFAULT_BASE_URLS = {"deepgram": deepgram.DEFAULT_BASE_URL}
_lock = threading.Lock()


def provider_for(provider: Provider) -> ChatProvider:
    """The client for a catalog provider. A disabled or unconfigured provider raises a
    retryable ProviderError: another provider's fallback model may still answer."""
    if not provider.enabled:
        raise ProviderError(f"{provider.name}: the provider is disabled", code="provider_disabled")
    if provider.is_offline:
        return _offline
    base_url = provider.base_url or DEFAULT_BASE_URLS.get(provider.kind, "")
    if not base_url:
        raise ProviderError(f"{provider.name}: the provider has no base URL", code="misconfigured")
    signature = (
        provider.kind,
        provider.name,
        base_url,
        provider.api_key,
        provider.timeout_seconds,
    )
    key = provider.pk if provider.pk is not None else provider.name
    with _lock:
        cached = _clients.get(key)
        if cached is not None and cached[0] == signature:
            return cached[1]
        client = _client(provider, base_url)
        # A replaced client is left to the garbage collector: a call may still be using it.
        _clients[key] = (signature, client)
        return client


def _client(provider: Provider, base_url: str) -> ChatProvider:
    if provider.kind == "deepgram":
        return DeepgramProvider(
            base_url,
            provider.api_key,
            timeout=float(provider.timeout_seconds),
            label=provider.name,
        )
    return OpenAICompatibleProvider(
        base_url,
        provider.api_key,
        timeout=float(provider.timeout_seconds),
        label=provider.name,
        headers=_headers_for(provider),
    )


def _headers_for(provider: Provider) -> dict[str, str]:
    if provider.kind == "openrouter":
        # OpenRouter's app attribution: https://openrouter.ai/docs/app-attribution
        return {"HTTP-Referer": settings.SITE_URL, "X-Title": APP_TITLE}
    return {}
