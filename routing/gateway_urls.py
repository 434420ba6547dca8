from __future__ import annotations

from django.urls import path

from routing import gateway

urlpatterns = [
    path("chat/completions", gateway.chat_completions, name="gateway_chat_completions"),
    path("models", gateway.models, name="gateway_models"),
]
