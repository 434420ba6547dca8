"""The clients that talk to models: `provider_for(provider)` picks one by the catalog
provider's kind.

Every kind but `offline`, `anthropic` and `deepgram` speaks OpenAI-compatible chat
completions over HTTP (`OpenAICompatibleProvider`), or the Responses API for a route
that asks for it (`OpenAIResponsesProvider`); `anthropic` speaks Anthropic's Messages
API (`AnthropicProvider`); `deepgram` transcribes audio through Deepgram's own API
(`DeepgramProvider`, its base URL Deepgram's unless the provider sets one); `offline`
is the deterministic, free `OfflineProvider`.
Clients are kept per catalog provider so their connection pools are reused; a change
of base URL, key or timeout gets a new one.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from django.conf import settings

from routing.providers import deepgram
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
from routing.providers.deepgram import DeepgramProvider
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
    "DeepgramProvider",
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
# Kinds whose provider has a base URL of its own when the catalog gives none.
DEFAULT_BASE_URLS = {"deepgram": deepgram.DEFAULT_BASE_URL}
_lock = threading.Lock()


def provider_for(provider: Provider, api: str = CHAT_COMPLETIONS) -> ChatProvider:
    """The client for a catalog provider, speaking `api` (a route's `UpstreamApi`) over
    HTTP. A disabled or unconfigured provider raises a retryable ProviderError: another
    provider's fallback model may still answer."""
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
    key = (provider.pk if provider.pk is not None else provider.name, api)
    with _lock:
        cached = _clients.get(key)
        if cached is not None and cached[0] == signature:
            return cached[1]
        client = _client(provider, base_url, api)
        # A replaced client is left to the garbage collector: a call may still be using it.
        _clients[key] = (signature, client)
        return client


def _client(provider: Provider, base_url: str, api: str) -> ChatProvider:
    if provider.kind == "anthropic":
        return AnthropicProvider(
            base_url,
            provider.api_key,
            timeout=float(provider.timeout_seconds),
            label=provider.name,
        )
    if provider.kind == "deepgram":
        return DeepgramProvider(
            base_url,
            provider.api_key,
            timeout=float(provider.timeout_seconds),
            label=provider.name,
        )
    kind = OpenAIResponsesProvider if api == RESPONSES else OpenAICompatibleProvider
    return kind(
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
