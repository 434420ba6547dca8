"""The clients that talk to models: `provider_for(provider)` picks one by the catalog
provider's kind.

Every kind but `offline` and `anthropic` speaks OpenAI-compatible chat completions
over HTTP (`OpenAICompatibleProvider`), or the Responses API for a route that asks for
it (`OpenAIResponsesProvider`); `anthropic` speaks Anthropic's Messages API
(`AnthropicProvider`); `offline` is the deterministic, free `OfflineProvider`.
Clients are kept per catalog provider so their connection pools are reused; a change
of base URL, key or timeout gets a new one.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from django.conf import settings

from routing.providers.anthropic import AnthropicProvider
from routing.providers.base import (
    ChatProvider,
    ChatRequest,
    Completion,
    ProviderError,
    StreamChunk,
    ToolCall,
    Usage,
)
from routing.providers.offline import CallTool, OfflineProvider, Reply
from routing.providers.openai_compat import OpenAICompatibleProvider
from routing.providers.openai_responses import OpenAIResponsesProvider

if TYPE_CHECKING:
    from routing.models import Provider

__all__ = [
    "AnthropicProvider",
    "CallTool",
    "ChatProvider",
    "ChatRequest",
    "Completion",
    "OfflineProvider",
    "OpenAICompatibleProvider",
    "OpenAIResponsesProvider",
    "ProviderError",
    "Reply",
    "StreamChunk",
    "ToolCall",
    "Usage",
    "provider_for",
]

APP_TITLE = "Control plane"

CHAT_COMPLETIONS, RESPONSES = "chat_completions", "responses"  # `UpstreamApi`'s values

_offline = OfflineProvider()
_clients: dict[object, tuple[tuple[object, ...], ChatProvider]] = {}
_lock = threading.Lock()


def provider_for(provider: Provider, api: str = CHAT_COMPLETIONS) -> ChatProvider:
    """The client for a catalog provider, speaking `api` (a route's `UpstreamApi`) over
    HTTP. A disabled or unconfigured provider raises a retryable ProviderError: another
    provider's fallback model may still answer."""
    if not provider.enabled:
        raise ProviderError(f"{provider.name}: the provider is disabled", code="provider_disabled")
    if provider.is_offline:
        return _offline
    if not provider.base_url:
        raise ProviderError(f"{provider.name}: the provider has no base URL", code="misconfigured")
    signature = (
        provider.kind,
        provider.name,
        provider.base_url,
        provider.api_key,
        provider.timeout_seconds,
    )
    key = (provider.pk if provider.pk is not None else provider.name, api)
    with _lock:
        cached = _clients.get(key)
        if cached is not None and cached[0] == signature:
            return cached[1]
        client: ChatProvider
        if provider.kind == "anthropic":
            client = AnthropicProvider(
                provider.base_url,
                provider.api_key,
                timeout=float(provider.timeout_seconds),
                label=provider.name,
            )
        else:
            kind = OpenAIResponsesProvider if api == RESPONSES else OpenAICompatibleProvider
            client = kind(
                provider.base_url,
                provider.api_key,
                timeout=float(provider.timeout_seconds),
                label=provider.name,
                headers=_headers_for(provider),
            )
        # A replaced client is left to the garbage collector: a call may still be using it.
        _clients[key] = (signature, client)
        return client


def _headers_for(provider: Provider) -> dict[str, str]:
    if provider.kind == "openrouter":
        # OpenRouter's app attribution: https://openrouter.ai/docs/app-attribution
        return {"HTTP-Referer": settings.SITE_URL, "X-Title": APP_TITLE}
    return {}
