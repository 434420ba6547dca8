from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path

from controlplane import metrics, profile_views, views
from controlplane.discord_interactions import discord_interactions
from controlplane.telegram_webhook import telegram_webhook
from routing.views import gateway_unknown_path

urlpatterns = [
    path("", views.home, name="home"),
    path("approvals/", views.approvals, name="approvals"),
    path("approvals/<int:approval_id>/decide/", views.decide, name="approval_decide"),
    path("toggles/", views.toggles, name="toggles"),
    path("toggles/switch/", views.switch, name="toggle-switch"),
    path("healthz", views.healthz, name="healthz"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/profile/", profile_views.profile, name="profile"),
    path("accounts/profile/link-code/", profile_views.new_link_code, name="profile_link_code"),
    path(
        "accounts/profile/chat-accounts/<int:account_id>/unlink/",
        profile_views.unlink,
        name="profile_unlink",
    ),
    path(
        "integrations/telegram/<int:integration_id>/webhook/",
        telegram_webhook,
        name="telegram_webhook",
    ),
    path(
        "integrations/discord/<int:integration_id>/interactions/",
        discord_interactions,
        name="discord_interactions",
    ),
    path("admin/", admin.site.urls),
    path("chat/", include("chat.urls")),
    path("routing/", include("routing.urls")),
    path("selfheal/api/", include("selfheal.api_urls")),
    path("selfheal/", include("selfheal.urls")),
    path("health/", include("healthmon.urls")),
    # Last: a `/v1/...` path nothing above serves gets the gateway's JSON 404 (its own
    # paths are served straight from ASGI, controlplane/asgi_routes.py).
    re_path(r"^v1(?:/|$)", gateway_unknown_path),
]
