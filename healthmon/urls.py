from __future__ import annotations

from django.urls import path

from healthmon import views

app_name = "healthmon"
urlpatterns = [
    path("", views.index, name="index"),
    path("fingerprints/<int:fingerprint_id>/", views.fingerprint, name="fingerprint"),
    *(
        path(
            f"fingerprints/<int:fingerprint_id>/{action}/",
            views.change_state,
            {"action": action},
            name=action,
        )
        for action in ("resolve", "unresolve", "ignore")
    ),
]
