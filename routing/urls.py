from __future__ import annotations

from django.urls import path

from routing import drilldown_views, views

app_name = "routing"
urlpatterns = [
    path("", views.index, name="index"),
    path("operations/<str:operation>/", drilldown_views.operation, name="operation"),
    # A model id holds slashes ("openai/gpt-4o").
    path("models/<path:model>/", drilldown_views.model, name="model"),
]
