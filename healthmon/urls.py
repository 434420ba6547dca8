from __future__ import annotations

from django.urls import path

from healthmon import code_views, views

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
    path("code/", code_views.code_health, name="code_health"),
    path(
        "code/repositories/<int:repository_id>/scan/",
        code_views.scan_now,
        name="code_scan_now",
    ),
    *(
        path(
            f"code/findings/<int:finding_id>/{action}/",
            code_views.triage_finding,
            {"action": action},
            name=f"code_finding_{action}",
        )
        for action in ("intended", "reopen")
    ),
]
