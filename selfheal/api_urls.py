"""URLs of the worker HTTP API, included at /selfheal/api/ (see `selfheal.api`)."""

from __future__ import annotations

from django.urls import path, re_path

from selfheal import api

app_name = "selfheal_api"
urlpatterns = [
    path("heartbeat", api.heartbeat, name="heartbeat"),
    path("claim", api.claim, name="claim"),
    path("offline", api.offline, name="offline"),
    path("tasks/<int:task_id>/extend", api.extend, name="extend"),
    path("tasks/<int:task_id>/complete", api.complete, name="complete"),
    path("tasks/<int:task_id>/fail", api.fail, name="fail"),
    path("tasks/<int:task_id>/release", api.release, name="release"),
    re_path(r"^(?P<unknown>[\s\S]*)\Z", api.not_found),
]
