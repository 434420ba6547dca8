from __future__ import annotations

from django.urls import path

from healthmon import code_report_views, views

app_name = "healthmon"
urlpatterns = [
    path("", views.index, name="index"),
    path("fingerprints/<int:fingerprint_id>/", views.fingerprint, name="fingerprint"),
    path("code/reports/", code_report_views.code_reports, name="code_reports"),
    path("code/reports/new/", code_report_views.make_code_report, name="make_code_report"),
    path("code/reports/<int:report_id>/", code_report_views.code_report, name="code_report"),
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
