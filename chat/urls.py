from __future__ import annotations

from django.urls import path

from chat import rating_views, views

app_name = "chat"
urlpatterns = [
    path("", views.index, name="index"),
    path("new/", views.new_session, name="new_session"),
    path("queue/", views.queue, name="queue"),
    path("<int:session_id>/", views.session, name="session"),
    path("<int:session_id>/mode/", views.set_mode, name="mode"),
    path("<int:session_id>/run/", views.start, name="run"),
    path("runs/<int:run_id>/stop/", views.stop, name="stop"),
    path("runs/<int:run_id>/retry/", views.retry, name="retry"),
    path("runs/<int:run_id>/rating/", rating_views.rating, name="rating"),
]
